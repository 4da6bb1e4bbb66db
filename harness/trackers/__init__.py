"""Speed, memory and telemetry trackers plus the validity verdict for a measurement.

Modules: latency (timing loop + LatencyStats), memory (RSS, CPU utilisation), telemetry (probe window + energy),
probe (probe base classes), psutil_probe / tegrastats / vcgencmd / nvidia_smi (one per source), validity.
Import from the modules directly; this package keeps no re-exports so importing latency stays cheap.
"""

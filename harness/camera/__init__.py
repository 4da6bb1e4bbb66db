"""What a camera does to a face before any model sees it: capture conditions (conditions.py), face-image
quality measures (quality.py)."""

"""Dataset tools behind ``deeplab data``: building VOC train_aug, converting colour masks, statistics.

Each module is a library the Python API can call; ``commands/data.py`` is only the CLI front.
"""

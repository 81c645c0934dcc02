"""Dataset tools behind ``deeplab data``: preparing VOC train_aug, Cityscapes, GTA5, SYNTHIA, COCO-Stuff and
ADE20K from their official downloads, converting colour masks, statistics.

Each module is a library the Python API can call; ``commands/data.py`` is only the CLI front.
"""

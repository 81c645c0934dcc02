"""Datasets: list files, training/evaluation datasets and augmentation, data tools."""

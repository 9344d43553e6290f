"""Tiny training settings shared by the train tests."""

from __future__ import annotations

from compatctl.train import load_train_config

DATA = "builtin:classes=4,train=64,test=16,size=16"
BASE = [f"data={DATA}", "arch=tiny_cnn", "embedding_dim=8", "epochs=1", "batch_size=32", "lr=0.05"]


def config(*overrides: str):
    return load_train_config(None, BASE + list(overrides))

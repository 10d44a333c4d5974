"""Handlers for the model, embedding and audit stages (filled in as the stages land)."""

from __future__ import annotations

import argparse

from engine.errors import NotBuiltError


def _not_built(stage: str) -> int:
    raise NotBuiltError(f"`{stage}` is not built yet (see the open issues)")


def train_ladder(args: argparse.Namespace) -> int:
    return _not_built("models train-ladder")


def list_models(args: argparse.Namespace) -> int:
    return _not_built("models list")


def embed(args: argparse.Namespace) -> int:
    return _not_built("embed")


def attack(args: argparse.Namespace) -> int:
    return _not_built("attack")


def dp(args: argparse.Namespace) -> int:
    return _not_built("dp")


def umap(args: argparse.Namespace) -> int:
    return _not_built("umap")


def report(args: argparse.Namespace) -> int:
    return _not_built("report")

"""Fixtures shared by several test modules."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture
def pylog(request):
    """A Python logger of this test's own, at DEBUG; its handlers are closed and removed, and
    its level and propagation restored, afterwards (the root logger is never touched)."""
    logger = logging.getLogger(f"tbkit.tests.{request.node.name}")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
        if handler not in saved[2]:
            handler.close()
    logger.setLevel(saved[0])
    logger.propagate = saved[1]
    for handler in saved[2]:
        logger.addHandler(handler)

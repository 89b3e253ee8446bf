"""The contract and the read side, free of TensorFlow: what a record is and how it is read.

``metadata`` and ``levels`` are the contract the write side shares; ``frames``, ``logdir`` and
``events`` are the one event layer that opens event files; ``rows`` is a record's byte form;
``query`` the filter language; ``read`` the public reader (``tbkit.read``). Nothing here
imports TensorFlow or :mod:`tbkit.summary` (checked by import-linter, see setup.cfg).
"""

"""Learned codecs: one package per codec, shared pieces beside them.

``base`` (the CompressAI-contract bitstream, padding, size limits, strict weight loading,
network identities, ``LearnedCodec``), ``compressai_codecs`` (the CompressAI zoo and users'
CompressAI-contract models), ``gan/`` and ``tic/`` (each: ``model``, ``bitstream``, ``codec``,
``checkpoint``, ``train``). Checkpoints are read and written by ``bench.weights``; training
is ``bench.training``. Nothing here is imported until a registry entry is loaded.
"""

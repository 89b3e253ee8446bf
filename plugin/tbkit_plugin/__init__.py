"""tbkit's TensorBoard plugin: every tbkit record of a logdir, queryable, without TensorFlow.

TensorBoard finds :class:`tbkit_plugin.plugin.TbkitPlugin` through the ``tensorboard_plugins``
entry point that ``pip install tbkit`` registers. The routes are documented in ``http_api.md``.
"""

"""Training: the loop, typed configuration, long-tail metrics and crash-safe checkpoints.

The package is also the public function :func:`climbq_deploy.api.train`:
``climbq_deploy.train(data, out, **options)`` trains a run and returns its folder.
"""

from climbq_deploy import _make_callable

_make_callable(__name__)

"""Make mmrazor 1.0.0, mmpretrain 1.2 and torch 2.x work together.

``import psenet_plugin`` runs :func:`apply` before anything of mmrazor is
imported. Each fix lives in its own module, with a docstring naming the
upstream defect it covers, and has a test that fails without it
(``tests/test_compat.py``). No installed file is edited.

* :mod:`.versions`: refuse unsupported dependency versions with one error.
* :mod:`.quantization`: mmrazor 1.0.0 fails to import on torch >= 2.
* :mod:`.checkpoint`: mmengine checkpoints fail to load under torch's
  ``weights_only=True`` default (torch >= 2.6).
* :mod:`.demo_inputs`: mmrazor's tracer demo inputs assume mmcls.
* :mod:`.distributed`: mmengine's PyTorch launcher needs a GPU to start.
* :mod:`.warnings`: two expected import-time warnings of the stack.
* :mod:`.package_utils`: mmengine finds ``mmpretrain::`` config bases with
  ``pkg_resources``, which setuptools 82 removed.
* :mod:`.safe_yaml`: mmengine's YAML handler runs code named by YAML tags.
* :mod:`.atomic_checkpoint`: mmengine writes checkpoints and
  ``last_checkpoint`` in place (a kill while saving truncates them) and
  resumes from an empty, missing or truncated one with a deep traceback.
* :mod:`.resource_estimator`: mmrazor's ``ResourceEstimator`` counts a
  dynamic (prunable) model at about the supernet's size, whatever subnet.
* :mod:`.mmcv_ops`: mmdet and mmseg fail to import on mmcv-lite (no
  ``mmcv._ext``); the kernels the det/seg configs need, from torchvision.
* :mod:`.unit_choice`: mmrazor's one-shot channel units forget the choice
  a ``'mutator'``-mode subnet config gives them (AutoSlim subnets load
  unpruned).
* :mod:`.runner_names`: two mmengine Runners of one config built in the
  same second of a process share one logger (the second logs into the
  first's file and stream) and one default scope.
* :mod:`.dataset_subset`: mmengine's ``get_subset`` deep-copies with one
  memo shared by the whole process: subsets share their pipeline, and a
  later subset can get an earlier one in place of an attribute.
"""
from . import (checkpoint, distributed, mmcv_ops, package_utils,
               quantization, versions, warnings)

_applied = False


def apply() -> None:
    """Apply every fix once. Safe to call again."""
    global _applied
    if _applied:
        return
    versions.check_versions()
    mmcv_ops.apply()  # before anything imports mmcv.cnn
    warnings.apply()
    package_utils.apply()
    quantization.apply()
    checkpoint.apply()
    distributed.apply()
    # Import mmengine's runner, fileio and hooks once the warnings are set.
    from . import atomic_checkpoint, dataset_subset, runner_names, safe_yaml
    safe_yaml.apply()
    atomic_checkpoint.apply()
    runner_names.apply()
    dataset_subset.apply()
    # Needs mmrazor.models, which imports only after the fixes above.
    from . import demo_inputs, resource_estimator, unit_choice
    demo_inputs.apply()
    resource_estimator.apply()
    unit_choice.apply()
    _applied = True

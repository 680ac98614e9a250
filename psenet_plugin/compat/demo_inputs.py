"""Demo inputs for tracing mmpretrain models with mmrazor's ChannelAnalyzer.

Upstream defect: mmrazor 1.0.0 was written against mmcls. Its demo-input
lookup (``mmrazor/models/task_modules/demo_inputs/default_demo_inputs.py``)
knows the scope ``'mmcls'`` and mmcls's ``ImageClassifier``, and
``DefaultMMClsDemoInput`` imports ``mmcls.structures.ClsDataSample``. With
mmpretrain (mmcls's successor) installed instead:

* ``DefaultDemoInput(scope='mmcls')``, which mmrazor's shipped pruning configs
  use, fails with ``ModuleNotFoundError: No module named 'mmcls'``;
* an mmpretrain ``ImageClassifier`` gets the generic input with
  ``data_samples=None``, so its forward in ``'loss'`` mode fails (the analyzer
  logs "Forward failed in loss mode") and mmrazor algorithms that trace or
  score a model in loss mode (e.g. with a demo input in training mode) cannot.

The fix registers :class:`DefaultMMPretrainDemoInput` (mmpretrain
``DataSample`` with labels) in ``TASK_UTILS`` and adds it to mmrazor's two
lookup tables: for the scope ``'mmpretrain'`` (and ``'mmcls'`` when mmcls is
not installed) and for mmpretrain's ``ImageClassifier`` models.
"""
import importlib.util

import torch
from mmrazor.models.task_modules.demo_inputs import default_demo_inputs
from mmrazor.models.task_modules.demo_inputs.demo_inputs import \
    DefaultMMDemoInput
from mmrazor.registry import TASK_UTILS


@TASK_UTILS.register_module()
class DefaultMMPretrainDemoInput(DefaultMMDemoInput):
    """Demo input for mmpretrain classifiers: random images with labelled
    ``DataSample`` objects, passed through the model's data preprocessor,
    so the model can run in ``'loss'``, ``'tensor'`` and ``'predict'`` mode.
    """

    def _get_mm_data(self, model, input_shape, training=False):
        from mmpretrain.structures import DataSample
        head = getattr(model, 'head', None)
        num_classes = getattr(head, 'num_classes', 1000)
        data_samples = [
            DataSample(
                metainfo=dict(
                    img_shape=tuple(input_shape[2:]),
                    num_classes=num_classes)).set_gt_label(i % num_classes)
            for i in range(input_shape[0])
        ]
        data = {'inputs': torch.rand(input_shape), 'data_samples': data_samples}
        return model.data_preprocessor(data, training)


def apply() -> None:
    """Add the mmpretrain demo input to mmrazor's lookup tables."""
    from mmpretrain.models import ImageClassifier
    by_scope = default_demo_inputs.default_demo_input_class_for_scope
    by_scope['mmpretrain'] = DefaultMMPretrainDemoInput
    if importlib.util.find_spec('mmcls') is None:
        by_scope['mmcls'] = DefaultMMPretrainDemoInput
    by_type = default_demo_inputs.default_demo_input_class
    by_type[ImageClassifier] = DefaultMMPretrainDemoInput
    by_type.move_to_end(ImageClassifier, last=False)

"""mmcv's kernels on mmcv-lite (psenet_plugin/compat/mmcv_ops.py): mmdet and
mmseg fail to import without them, import with them, and every provided
kernel equals its definition."""
import pytest
import torch

from conftest import run_python
from psenet_plugin.compat import mmcv_ops

needs_lite = pytest.mark.skipif(
    mmcv_ops.compiled_ext_available(),
    reason='a compiled mmcv._ext is installed (full mmcv): nothing to fix')


@needs_lite
def test_mmdet_fails_to_import_on_mmcv_lite_without_the_fix():
    pytest.importorskip('mmdet')
    result = run_python(['-c', 'import mmdet.models'])
    assert result.returncode != 0
    assert "No module named 'mmcv._ext'" in result.stderr


@needs_lite
def test_mmdet_and_mmseg_models_import_with_the_fix():
    pytest.importorskip('mmdet')
    pytest.importorskip('mmseg')
    result = run_python(['-c', 'import psenet_plugin, mmdet.models, '
                         'mmseg.models; from mmcv.ops import batched_nms'])
    assert result.returncode == 0, result.stderr


def greedy_nms(boxes, scores, iou_threshold, offset=0):
    """The definition: take the best remaining box, drop every remaining
    box whose IoU with it exceeds the threshold, repeat."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    area = [(float(b[2] - b[0]) + offset) * (float(b[3] - b[1]) + offset)
            for b in boxes]
    kept = []
    while order:
        best = order.pop(0)
        kept.append(best)
        rest = []
        for i in order:
            w = min(float(boxes[best][2]), float(boxes[i][2])) - max(
                float(boxes[best][0]), float(boxes[i][0])) + offset
            h = min(float(boxes[best][3]), float(boxes[i][3])) - max(
                float(boxes[best][1]), float(boxes[i][1])) + offset
            inter = max(w, 0.) * max(h, 0.)
            if inter / (area[best] + area[i] - inter) <= iou_threshold:
                rest.append(i)
        order = rest
    return kept


def random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 40
    wh = torch.rand(n, 2, generator=g) * 20 + 1
    scores = torch.randperm(n, generator=g).float() / n  # no ties
    return torch.cat([xy, xy + wh], 1), scores


@pytest.mark.parametrize('offset', [0, 1])
@pytest.mark.parametrize('iou', [0.3, 0.5, 0.7])
def test_nms_equals_greedy_nms(offset, iou):
    pytest.importorskip('mmdet')
    import psenet_plugin  # noqa: F401  (installs mmcv._ext where missing)
    from mmcv.ops import nms
    boxes, scores = random_boxes(60, seed=int(iou * 10) + offset)
    dets, keep = nms(boxes, scores, iou, offset=offset)
    assert keep.tolist() == greedy_nms(boxes, scores, iou, offset)
    assert torch.equal(dets[:, :4], boxes[keep])
    assert torch.equal(dets[:, 4], scores[keep])
    assert mmcv_ops.nms(boxes[:0], scores[:0], iou).numel() == 0


def test_batched_nms_suppresses_within_each_class_only():
    pytest.importorskip('mmdet')
    import psenet_plugin  # noqa: F401
    from mmcv.ops import batched_nms
    boxes, scores = random_boxes(50, seed=3)
    labels = torch.arange(50) % 3
    _, keep = batched_nms(boxes, scores, labels,
                          dict(type='nms', iou_threshold=0.5))
    expected = []
    for c in range(3):
        index = (labels == c).nonzero().flatten()
        expected += index[greedy_nms(boxes[index], scores[index],
                                     0.5)].tolist()
    assert sorted(keep.tolist()) == sorted(expected)
    assert scores[keep].diff().le(0).all()  # by decreasing score


def focal_reference(logits, target, gamma, alpha):
    """The definition (Lin et al. 2017), as torchvision writes it, on
    one-hot targets (a target of num_classes: no class present)."""
    import torchvision
    one_hot = torch.nn.functional.one_hot(
        target, logits.size(1) + 1)[:, :-1].to(logits)
    return torchvision.ops.sigmoid_focal_loss(logits, one_hot, alpha, gamma,
                                              reduction='none')


@pytest.mark.parametrize('gamma,alpha', [(2.0, 0.25), (1.0, 0.5),
                                         (0.0, 0.75)])
def test_sigmoid_focal_loss_equals_its_definition(gamma, alpha):
    pytest.importorskip('mmdet')
    import psenet_plugin  # noqa: F401
    from mmcv.ops import sigmoid_focal_loss
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(30, 5, generator=g, dtype=torch.float64) *
              3).requires_grad_()
    target = torch.randint(0, 6, (30, ), generator=g)  # 5: background
    loss = sigmoid_focal_loss(logits, target, gamma, alpha, None, 'none')
    reference = focal_reference(logits, target, gamma, alpha)
    torch.testing.assert_close(loss, reference)
    upstream = torch.randn(30, 5, generator=g, dtype=torch.float64)
    grad, = torch.autograd.grad((loss * upstream).sum(), logits)
    expected, = torch.autograd.grad((reference * upstream).sum(), logits)
    torch.testing.assert_close(grad, expected)
    mean = sigmoid_focal_loss(logits, target, gamma, alpha, None, 'mean')
    torch.testing.assert_close(mean, reference.sum() / 30)


def test_sigmoid_focal_loss_class_weight():
    pytest.importorskip('mmdet')
    import psenet_plugin  # noqa: F401
    from mmcv.ops import sigmoid_focal_loss
    logits = torch.randn(8, 4, dtype=torch.float64)
    target = torch.arange(8) % 4
    weight = torch.tensor([1., 2., 0.5, 3.], dtype=torch.float64)
    loss = sigmoid_focal_loss(logits, target, 2.0, 0.25, weight, 'none')
    torch.testing.assert_close(
        loss, focal_reference(logits, target, 2.0, 0.25) *
        weight[target].unsqueeze(1))


def test_an_op_not_provided_names_itself_in_one_line():
    pytest.importorskip('mmdet')
    import psenet_plugin  # noqa: F401
    if mmcv_ops.compiled_ext_available():
        pytest.skip('a compiled mmcv._ext is installed')
    from mmcv.ops import roi_align
    with pytest.raises(mmcv_ops.MmcvOpUnavailableError,
                       match="'roi_align_forward' is unavailable") as info:
        roi_align(torch.rand(1, 2, 8, 8), torch.tensor([[0., 0, 0, 4, 4]]),
                  (2, 2))
    assert '\n' not in str(info.value)

# Prior-sampling evolution search on the FCN-MobileNetV2 supernet of
# pse_fcn_mbv2_digits.py: candidates are scored by mIoU on
# the training images held out of supernet training.
#   python tools/search.py configs/seg/pse_fcn_mbv2_digits_search.py \
#       work_dirs/pse_fcn_mbv2_digits/iter_20.pth
#   python tools/export.py configs/seg/pse_fcn_mbv2_digits_search.py \
#       work_dirs/pse_fcn_mbv2_digits/iter_20.pth \
#       work_dirs/pse_fcn_mbv2_digits_search/best_subnet.json
_base_ = ['./pse_fcn_mbv2_digits.py']

train_cfg = dict(
    _delete_=True,
    type='mmrazor.PriorEvolutionSearchLoop',
    dataloader=_base_.heldout_dataloader,
    evaluator=_base_.heldout_evaluator,
    max_epochs=2,
    num_candidates=4,
    top_k=2,
    num_mutation=2,
    num_crossover=2,
    mutate_prob=0.2,
    calibrate_sample_num=64,
    # MFLOPs at 64x64 (flops_convention='all'): about half of the max
    # subnet's 40.49 (the min subnet: 11.33); `tools/search.py
    # --flops-target` overrides it.
    constraints_range=dict(flops=(18.0, 22.5)),
    flops_convention='all',
    score_key='mIoU',
    prior='checkpoint')

val_cfg = None
val_dataloader = None
val_evaluator = None

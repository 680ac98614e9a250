# Prior-sampling evolution search of the PSE-Net MobileNetV2-1.5x supernet
# for 300 MFLOPs (+-5%) on ImageNet, the paper's headline setting.
#   torchrun --nproc-per-node 8 tools/search.py \
#       configs/search/pse_mbv2_search_8xb256_in1k.py SUPERNET.pth --launcher pytorch
_base_ = ['../pse_mbv2.py']

train_cfg = dict(
    _delete_=True,
    type='mmrazor.PriorEvolutionSearchLoop',
    # Scores on images held out of training; the result is reported on val.
    dataloader=_base_.heldout_dataloader,
    evaluator=_base_.val_evaluator,
    max_epochs=20,
    num_candidates=50,
    top_k=10,
    num_mutation=25,
    num_crossover=25,
    mutate_prob=0.1,
    calibrate_sample_num=4096,
    # 300 MFLOPs as the paper counts them: the multiply-adds of convolutions
    # and linear layers (flops_convention='conv_linear'). mmengine's
    # get_model_complexity_info (flops_convention='all', what
    # tools/export.py's summary reports) also counts batch norms and
    # pooling: about 3% more (MobileNetV2 1.0: 314.2 against 300.8 M; the
    # max subnet of this supernet: 693.5 against 672.8 M).
    constraints_range=dict(flops=(285., 315.)),
    flops_convention='conv_linear',
    score_key='accuracy/top1',
    prior='checkpoint')

val_cfg = None
val_dataloader = None
val_evaluator = None

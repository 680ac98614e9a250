from .estimator import SubnetFlopsEstimator
from .dynamic_ops import PSEBatchNorm2d, PSEConv2d, PSELinear
from .mutables import PSEMutableChannel, PSEMutableChannelUnit
from .mutator import PSEChannelMutator
from .parallel import GroupLayout, group_batch_norm, mask_channels
from .psenet import PSENet, forward_subnets

__all__ = [
    'GroupLayout', 'group_batch_norm', 'mask_channels', 'PSEConv2d',
    'PSELinear', 'PSEBatchNorm2d', 'PSEMutableChannel',
    'PSEMutableChannelUnit', 'PSEChannelMutator', 'PSENet', 'forward_subnets',
    'SubnetFlopsEstimator'
]

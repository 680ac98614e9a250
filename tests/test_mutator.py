"""The PSE mutator in single-subnet mode: a stand-in for mmrazor's
OneShotChannelMutator, with validated input."""
import random

import pytest
import torch
from mmrazor.models.mutators import OneShotChannelMutator
from mmrazor.registry import MODELS

from psenet_plugin.errors import ConfigError

from helpers import build_supernet, classifier_cfg, mutator_cfg


@pytest.fixture(scope='module')
def supernet():
    return build_supernet('mobilenet_v2')


def test_is_a_one_shot_channel_mutator_with_its_api(supernet):
    architecture, mutator = supernet
    assert isinstance(mutator, OneShotChannelMutator)
    assert len(mutator.mutable_units) == 25
    mutator.set_max_choices()
    assert mutator.current_choices == mutator.max_choices
    full = architecture.extract_feat(torch.randn(2, 3, 32, 32))[-1]
    mutator.set_min_choices()
    assert mutator.current_choices == mutator.min_choices
    small = architecture.extract_feat(torch.randn(2, 3, 32, 32))[-1]
    assert small.shape[1] < full.shape[1]
    choices = mutator.sample_choices()
    mutator.set_choices(choices)
    assert mutator.current_choices == choices
    unit = mutator.mutable_units[0]
    assert set(mutator.max_choices) == set(choices) == set(
        mutator.choice_template)
    assert mutator.max_choices[unit.name] == max(unit.candidate_choices)


def test_mutable_units_are_mmrazors_list_kept_after_preparation(supernet):
    """The kept list holds what mmrazor's property computes, in its order;
    a caller that edits the returned list does not edit the mutator's."""
    _, mutator = supernet
    rebuilt = OneShotChannelMutator.mutable_units.fget(mutator)
    kept = mutator.mutable_units
    assert [id(u) for u in kept] == [id(u) for u in rebuilt]
    assert len(kept) == 25
    kept.pop()
    assert len(mutator.mutable_units) == 25


def test_channel_numbers_are_accepted_as_choices(supernet):
    """mmrazor's EvolutionSearchLoop writes int channel numbers; a ratio
    unit takes them back (mmrazor's own unit asserts)."""
    _, mutator = supernet
    choices = mutator.sample_choices('random', random.Random(3))
    widths = mutator.widths_of(choices)
    assert all(isinstance(w, int) for w in widths.values())
    mutator.set_choices(widths)
    assert mutator.current_choices == choices
    assert mutator.current_widths == widths
    assert mutator.choices_of(widths) == choices


def test_unknown_units_are_named(supernet):
    _, mutator = supernet
    with pytest.raises(ConfigError, match=r"unknown unit\(s\): \['nope'\]"):
        mutator.set_choices({'nope': 1.0})


def test_non_candidate_choices_list_what_is_accepted(supernet):
    _, mutator = supernet
    unit = mutator.mutable_units[0]
    with pytest.raises(ConfigError) as error:
        mutator.set_choices({unit.name: 0.123})
    assert unit.name in str(error.value)
    assert str(unit.candidate_widths) in str(error.value)
    with pytest.raises(ConfigError, match='is not a candidate'):
        mutator.set_choices({unit.name: unit.candidate_widths[0] + 1})


def test_parallel_mode_needs_every_unit(supernet):
    _, mutator = supernet
    partial = dict(list(mutator.max_choices.items())[:3])
    with pytest.raises(ConfigError, match='gives no choice'):
        mutator.set_parallel_choices([mutator.max_choices, partial])
    assert mutator.parallel_subnets is None


def test_parallel_mode_is_left_even_on_error(supernet):
    architecture, mutator = supernet
    with pytest.raises(RuntimeError):
        with mutator.parallel([mutator.max_choices, mutator.min_choices]):
            architecture.extract_feat(torch.randn(2, 5, 32, 32))  # bad input
    assert mutator.parallel_subnets is None
    assert all(u.mutable_channel.parallel_layout is None
               for u in mutator.mutable_units)


class Untraceable(torch.nn.Module):
    """A backbone with a module torch.fx cannot look inside."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3)
        self.gate = Gate()

    def forward(self, x):
        return (self.gate(self.stem(x)), )


class Gate(torch.nn.Module):
    """Scales by a Python number computed from the tensor: torch.fx cannot
    trace that (mmrazor's tracer then keeps the module opaque)."""

    def forward(self, x):
        return x * float(x.mean())


def test_untraceable_architecture_error_names_the_module():
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    PRETRAIN_MODELS.register_module('UntraceableBackbone', force=True,
                                    module=Untraceable)
    cfg = classifier_cfg('mobilenet_v2')
    cfg['backbone'] = dict(type='UntraceableBackbone')
    cfg['head']['in_channels'] = 8
    architecture = MODELS.build(cfg)
    mutator = MODELS.build(mutator_cfg())
    with pytest.raises(ConfigError) as error:
        mutator.prepare_from_supernet(architecture)
    assert "'backbone.gate' (Gate)" in str(error.value)


def test_demo_input_the_model_rejects_is_one_clear_error():
    architecture = MODELS.build(classifier_cfg('mobilenet_v2'))
    mutator = MODELS.build(mutator_cfg())
    mutator.parse_cfg['demo_input'] = (1, 5, 32, 32)  # 5 channels: wrong
    with pytest.raises(ConfigError) as error:
        mutator.prepare_from_supernet(architecture)
    message = str(error.value)
    assert 'could not split ImageClassifier' in message
    assert 'mutator.parse_cfg.demo_input' in message
    assert len(message) < 800


def test_unit_type_without_parallel_mode_is_refused():
    with pytest.raises(ConfigError, match='PSEMutableChannelUnit'):
        MODELS.build(
            dict(
                type='mmrazor.PSEChannelMutator',
                channel_unit_cfg=dict(type='OneShotMutableChannelUnit')))

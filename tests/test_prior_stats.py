"""Prior statistics: per unit and width, the recorded subnet losses."""
import json

import pytest
import torch

from psenet_plugin.errors import ConfigError
from psenet_plugin.structures.prior import SubnetLossStats


def test_statistics_average_losses_per_unit_and_width():
    stats = SubnetLossStats(top_n=2)
    stats.update([{'a': 8, 'b': 16}, {'a': 16, 'b': 16}], [2.0, 1.0])
    stats.update([{'a': 8, 'b': 32}], [4.0])
    assert stats.mean_loss('a', 8) == 3.0
    assert stats.count('a', 8) == 2
    assert stats.mean_loss('b', 16) == 1.5
    assert stats.mean_loss('b', 24) is None
    assert stats.num_records == 3
    assert [t['loss'] for t in stats.top] == [1.0, 2.0]
    assert stats.top[0]['widths'] == {'a': 16, 'b': 16}


def test_round_trip_through_json_and_checkpoint(tmp_path):
    stats = SubnetLossStats(top_n=3)
    for i in range(10):
        stats.update([{'a': 8 * (i % 3 + 1), 'b': 16}], [10.0 - i])
    path = tmp_path / 'prior.json'
    stats.save(str(path))
    again = SubnetLossStats.load(str(path))
    assert again.state_dict() == stats.state_dict()
    assert json.loads(path.read_text())['format'] == 'psenet-prior-stats/1'
    torch.save({'prior_stats': stats.state_dict()}, tmp_path / 'ckpt.pth')
    from_checkpoint = SubnetLossStats.load(str(tmp_path / 'ckpt.pth'))
    assert from_checkpoint.state_dict() == stats.state_dict()
    assert [t['loss'] for t in from_checkpoint.top] == [1.0, 2.0, 3.0]


def test_checkpoint_without_statistics_is_named(tmp_path):
    torch.save({'state_dict': {}}, tmp_path / 'plain.pth')
    with pytest.raises(ConfigError, match='holds no prior statistics'):
        SubnetLossStats.load(str(tmp_path / 'plain.pth'))


def test_unknown_format_is_refused():
    with pytest.raises(ConfigError, match="accepted: 'psenet-prior-stats/1'"):
        SubnetLossStats().load_state_dict({'format': 'other'})

"""The settings of a local multi-node KRaft cluster: one quorum, one cluster id, replicated."""

import pytest

from fraud_assets.kafka.admin import TopicSpec
from fraud_assets.kafka.broker import BrokerStartError, read_properties, render_server_properties
from fraud_assets.kafka.cluster import ClusterSettings, KafkaCluster, node_settings


def test_every_node_names_the_whole_quorum_and_shares_the_cluster_id(tmp_path):
    nodes = node_settings(ClusterSettings(tmp_path, tmp_path / "jars", nodes=3))

    assert [n.node_id for n in nodes] == [1, 2, 3]
    assert len({n.cluster_id for n in nodes}) == 1 and nodes[0].cluster_id
    assert len({n.state_dir for n in nodes}) == 3
    ports = [p for n in nodes for p in (n.port, n.controller_port)]
    assert len(set(ports)) == 6, "every listener needs its own port"
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)
    for node in nodes:
        path = tmp_path / f"server-{node.node_id}.properties"
        path.write_text(render_server_properties(node, node.controller_port))
        properties = read_properties(path)
        assert properties["controller.quorum.voters"] == voters
        assert properties["node.id"] == str(node.node_id)
        assert properties["listeners"] == (
            f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}"
        )
        # Replication overrides the single-node defaults, internal topics included.
        assert properties["default.replication.factor"] == "3"
        assert properties["min.insync.replicas"] == "2"
        assert properties["offsets.topic.replication.factor"] == "3"
        assert properties["transaction.state.log.min.isr"] == "2"
        assert properties["unclean.leader.election.enable"] == "false"


def test_a_restarted_cluster_keeps_its_ports_and_cluster_id(tmp_path):
    settings = ClusterSettings(tmp_path, tmp_path / "jars", nodes=3)
    first, again = node_settings(settings), node_settings(settings)
    assert first == again
    with pytest.raises(BrokerStartError, match="3-node cluster, not 5 nodes"):
        node_settings(ClusterSettings(tmp_path, tmp_path / "jars", nodes=5, replication_factor=3))


def test_a_single_broker_keeps_its_single_voter_quorum(tmp_path):
    from fraud_assets.kafka.broker import BrokerSettings

    path = tmp_path / "server.properties"
    path.write_text(render_server_properties(BrokerSettings(tmp_path, tmp_path, node_id=4), 9093))
    properties = read_properties(path)
    assert properties["controller.quorum.voters"] == "4@127.0.0.1:9093"
    assert properties["default.replication.factor"] == "1"


@pytest.mark.parametrize(
    ("nodes", "factor", "min_isr"), [(3, 4, 2), (3, 3, 4), (3, 3, 0), (0, 1, 1)]
)
def test_impossible_replication_is_refused(tmp_path, nodes, factor, min_isr):
    with pytest.raises(ValueError):
        ClusterSettings(
            tmp_path, tmp_path, nodes=nodes, replication_factor=factor, min_insync_replicas=min_isr
        )


def test_replicated_specs_carry_the_cluster_replication(tmp_path):
    cluster = KafkaCluster(ClusterSettings(tmp_path, tmp_path / "jars"))
    specs = cluster.replicated(
        [TopicSpec("a", partitions=3), TopicSpec("b", config=(("min.insync.replicas", "1"),))]
    )
    assert [s.replication_factor for s in specs] == [3, 3]
    assert [dict(s.config)["min.insync.replicas"] for s in specs] == ["2", "2"]
    assert specs[0].partitions == 3
    assert cluster.bootstrap_servers.count(",") == 2
    assert cluster.pids() == []

"""RevisionGraph and the pure status/plan decisions (no Alembic, no database)."""

from __future__ import annotations

import pytest

from alembic_fleet.model.revisions import (
    DuplicateRevision,
    MultipleHeads,
    Revision,
    RevisionCycle,
    RevisionGraph,
    UnknownReference,
)
from alembic_fleet.model.status import (
    Outcome,
    Step,
    TargetResult,
    TargetState,
    TargetStatus,
    classify,
    plan_step,
    state_after,
)
from alembic_fleet.model.targets import Database, Target


def graph(edges: dict[str, tuple[str, ...]], heads: tuple[str, ...]) -> RevisionGraph:
    return RevisionGraph({rid: Revision(rid, down, f"msg {rid}") for rid, down in edges.items()},
                         heads)


# a <- b <- c
LINEAR = {"a": (), "b": ("a",), "c": ("b",)}
# a <- b1, a <- b2, (b1, b2) <- m <- n
MERGED = {"a": (), "b1": ("a",), "b2": ("a",), "m": ("b1", "b2"), "n": ("m",)}
# a <- b1, a <- b2 (two heads)
BRANCHED = {"a": (), "b1": ("a",), "b2": ("a",)}

TARGET = Target("auth", "toshiba", "auth_toshiba", Database(embedded_name="postgres"))


@pytest.fixture
def linear() -> RevisionGraph:
    return graph(LINEAR, ("c",))


@pytest.fixture
def merged() -> RevisionGraph:
    return graph(MERGED, ("n",))


@pytest.fixture
def branched() -> RevisionGraph:
    return graph(BRANCHED, ("b1", "b2"))


def assert_topological(g: RevisionGraph) -> None:
    """Every revision appears before (above) the revisions it revises."""
    ids = [r.id for r in g.ordered]
    position = {rid: i for i, rid in enumerate(ids)}
    for rev in g.ordered:
        for down in rev.down:
            if down in position:
                assert position[rev.id] < position[down], (rev.id, down, ids)


# --- RevisionGraph -----------------------------------------------------------------------


def test_knows(linear: RevisionGraph) -> None:
    assert linear.knows("a")
    assert linear.knows("c")
    assert not linear.knows("zzz")
    assert not linear.knows("")


@pytest.mark.parametrize(
    ("revs", "expected"),
    [
        ((), set()),
        (("a",), {"a"}),
        (("b",), {"a", "b"}),
        (("c",), {"a", "b", "c"}),
        (("c", "a"), {"a", "b", "c"}),
        (("unknown",), set()),
        (("unknown", "b"), {"a", "b"}),
    ],
)
def test_ancestors_linear(linear: RevisionGraph, revs: tuple[str, ...], expected: set[str]
                          ) -> None:
    assert linear.ancestors(revs) == frozenset(expected)


@pytest.mark.parametrize(
    ("revs", "expected"),
    [
        (("b1",), {"a", "b1"}),
        (("b2",), {"a", "b2"}),
        (("b1", "b2"), {"a", "b1", "b2"}),
        (("m",), {"a", "b1", "b2", "m"}),
        (("n",), {"a", "b1", "b2", "m", "n"}),
    ],
)
def test_ancestors_merged(merged: RevisionGraph, revs: tuple[str, ...], expected: set[str]
                          ) -> None:
    assert merged.ancestors(revs) == frozenset(expected)


def test_ancestors_accepts_any_iterable_and_caches(linear: RevisionGraph) -> None:
    first = linear.ancestors(iter(["c"]))
    assert first == {"a", "b", "c"}
    assert linear.ancestors(["c"]) is first  # cached by the set of ids
    assert linear.ancestors({"c"}) == first


def test_ordered_ignores_missing_down_revision() -> None:
    g = graph({"b": ("gone",), "c": ("b",)}, ("c",))
    assert [r.id for r in g.ordered] == ["c", "b"]


def test_ancestors_ignores_missing_down_revision() -> None:
    g = graph({"b": ("gone",), "c": ("b",)}, ("c",))
    assert g.ancestors(["c"]) == {"b", "c"}
    assert g.pending((), ("c",)) == 2


@pytest.mark.parametrize(
    ("current", "destination", "pending"),
    [
        ((), ("c",), 3),
        (("a",), ("c",), 2),
        (("b",), ("c",), 1),
        (("c",), ("c",), 0),
        (("c",), ("a",), 0),  # downgrade direction: nothing to apply
        (("a",), ("b",), 1),
        ((), (), 0),
    ],
)
def test_pending_linear(linear: RevisionGraph, current: tuple[str, ...],
                        destination: tuple[str, ...], pending: int) -> None:
    assert linear.pending(current, destination) == pending


@pytest.mark.parametrize(
    ("current", "destination", "pending"),
    [
        ((), ("n",), 5),
        (("a",), ("n",), 4),
        (("b1",), ("n",), 3),  # b2, m, n
        (("b1", "b2"), ("n",), 2),  # m, n
        (("m",), ("n",), 1),
        (("n",), ("n",), 0),
        (("b1",), ("b2",), 1),
        (("b1",), ("m",), 2),
    ],
)
def test_pending_merged(merged: RevisionGraph, current: tuple[str, ...],
                        destination: tuple[str, ...], pending: int) -> None:
    assert merged.pending(current, destination) == pending


@pytest.mark.parametrize(
    ("current", "destination", "past"),
    [
        (("c",), ("c",), False),
        (("b",), ("c",), False),
        ((), ("c",), False),
        (("c",), ("b",), True),
        (("c",), ("a",), True),
        (("b",), (), True),
    ],
)
def test_is_past_linear(linear: RevisionGraph, current: tuple[str, ...],
                        destination: tuple[str, ...], past: bool) -> None:
    assert linear.is_past(current, destination) is past


@pytest.mark.parametrize(
    ("current", "destination", "past"),
    [
        (("b1",), ("n",), False),
        (("b1", "b2"), ("m",), False),
        (("b1",), ("b2",), True),  # sideways: b1 is not below b2
        (("m",), ("b1",), True),
        (("n",), ("n",), False),
    ],
)
def test_is_past_merged(merged: RevisionGraph, current: tuple[str, ...],
                        destination: tuple[str, ...], past: bool) -> None:
    assert merged.is_past(current, destination) is past


def test_ordered_linear(linear: RevisionGraph) -> None:
    assert [r.id for r in linear.ordered] == ["c", "b", "a"]
    assert linear.ordered[0].message == "msg c"


def test_ordered_merged(merged: RevisionGraph) -> None:
    ids = [r.id for r in merged.ordered]
    assert ids[0] == "n"
    assert ids[1] == "m"
    assert set(ids[2:4]) == {"b1", "b2"}
    assert ids[-1] == "a"
    assert len(ids) == len(set(ids)) == 5
    assert_topological(merged)


def test_ordered_two_heads(branched: RevisionGraph) -> None:
    ids = [r.id for r in branched.ordered]
    assert sorted(ids) == ["a", "b1", "b2"]
    assert ids[-1] == "a"
    assert_topological(branched)


def test_ordered_skips_revisions_not_reachable_from_heads() -> None:
    g = graph({"a": (), "b": ("a",), "orphan": ()}, ("b",))
    assert [r.id for r in g.ordered] == ["b", "a"]


def test_ordered_empty_graph() -> None:
    assert graph({}, ()).ordered == ()


def test_ordered_long_linear_chain_has_no_recursion_limit() -> None:
    n = 5000
    edges = {f"r{i}": ((f"r{i - 1}",) if i else ()) for i in range(n)}
    g = graph(edges, (f"r{n - 1}",))
    ids = [r.id for r in g.ordered]
    assert ids[0] == f"r{n - 1}"
    assert ids[-1] == "r0"
    assert len(ids) == n
    assert g.pending((), (f"r{n - 1}",)) == n


def test_ordered_complex_dag_is_topological() -> None:
    edges = {
        "a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "e": ("a",),
        "f": ("d", "e"), "g": ("b",), "h": ("f", "g"),
    }
    g = graph(edges, ("h",))
    assert len(g.ordered) == len(edges)
    assert g.ordered[0].id == "h"
    assert g.ordered[-1].id == "a"
    assert_topological(g)


# --- RevisionGraph.from_revisions and its validations ------------------------------------


def declared(*revisions: tuple) -> RevisionGraph:
    """``(id, down[, depends_on[, branch_labels]])`` tuples, as files would declare them."""
    return RevisionGraph.from_revisions(
        Revision(rid, tuple(down), path=f"{rid}.py",
                 depends_on=tuple(rest[0]) if rest else (),
                 branch_labels=tuple(rest[1]) if len(rest) > 1 else ())
        for rid, down, *rest in revisions)


def test_from_revisions_clean_linear_graph() -> None:
    g = declared(("a", ()), ("b", ("a",)), ("c", ("b",)))
    assert g.heads == ("c",)
    assert [r.id for r in g.ordered] == ["c", "b", "a"]
    assert g.is_linear
    assert g.problems() == ()


def test_from_revisions_merge_revision_is_clean() -> None:
    g = declared(*((rid, down) for rid, down in MERGED.items()))
    assert g.heads == ("n",)
    assert g.problems() == ()
    assert g.parents("m") == ("b1", "b2")
    assert not g.is_linear
    assert g.ancestors(["m"]) == {"a", "b1", "b2", "m"}
    assert g.pending(("b1",), g.heads) == 3
    assert_topological(g)


def test_duplicate_revision() -> None:
    first, copy = Revision("b", ("a",), path="b.py"), Revision("b", ("a",), path="b_copy.py")
    g = RevisionGraph.from_revisions([Revision("a", ()), first, copy])
    (problem,) = g.problems()
    assert isinstance(problem, DuplicateRevision)
    assert problem.code == "FC101"
    assert problem.revision == "b"
    assert problem.declarations == (first, copy)
    assert g.revisions["b"] is first  # the first declaration is the one the graph keeps
    assert len(g.declarations) == 3


def test_multiple_heads_in_declaration_order_and_sorted_in_the_problem() -> None:
    g = declared(("a", ()), ("z", ("a",)), ("b", ("a",)))
    assert g.heads == ("z", "b")
    assert g.problems() == (MultipleHeads(("b", "z")),)
    assert MultipleHeads.code == "FC102"


def test_depends_on_does_not_merge_heads() -> None:
    g = declared(("a", ()), ("b", ("a",)), ("c", ("a",), ("b",)))
    assert g.heads == ("b", "c")
    assert g.multiple_heads() == MultipleHeads(("b", "c"))
    assert g.ancestors(["c"]) == {"a", "b", "c"}  # a dependency is applied first
    assert not g.is_linear


def test_unknown_down_revision() -> None:
    g = declared(("a", ()), ("b", ("a", "gone")), ("c", ("b",)))
    (problem,) = g.problems()
    assert problem == UnknownReference(g.revisions["b"], "gone", "down_revision")
    assert problem.code == "FC103"
    assert g.ancestors(["c"]) == {"a", "b", "c"}
    assert g.pending(("a",), ("c",)) == 2


def test_unknown_down_revision_each_name() -> None:
    g = declared(("c", ("a", "b")))
    assert [(p.name, p.kind) for p in g.unknown_references()] == [
        ("a", "down_revision"), ("b", "down_revision")]


def test_depends_on_may_name_a_branch_label() -> None:
    g = declared(("a", (), (), ("core",)), ("b", ("a",)), ("c", ("b",), ("core",)),
                 ("d", ("c",), ("nope",)))
    (problem,) = g.problems()
    assert problem == UnknownReference(g.revisions["d"], "nope", "depends_on")
    assert g.labels == {"core": ("a",)}
    assert g.parents("c") == ("b", "a")
    assert g.parents("d") == ("c",)


def test_three_cycle_members_in_order() -> None:
    g = declared(("a1", ("a3",)), ("a2", ("a1",)), ("a3", ("a2",)))
    (cycle,) = g.problems()
    assert isinstance(cycle, RevisionCycle)
    assert cycle.code == "FC104"
    assert cycle.path == ("a1", "a3", "a2", "a1")  # child -> parent, down the history
    assert cycle.members == ("a1", "a3", "a2")
    assert cycle.through("a2") == ("a2", "a1", "a3", "a2")
    assert g.heads == ()
    assert g.ordered == ()


def test_self_cycle() -> None:
    g = declared(("a3", ()), ("a4", ("a3", "a4")))
    assert g.problems() == (RevisionCycle(("a4", "a4")),)


def test_cycle_through_depends_on_and_a_label() -> None:
    g = declared(("a", (), (), ("core",)), ("b", ("a",), ("c",)), ("c", ("b",), ("core",)))
    assert g.cycle() == RevisionCycle(("b", "c", "b"))


def test_one_cycle_at_a_time_the_rest_still_validates() -> None:
    g = declared(("base", ()), ("x", ("base", "y")), ("y", ("x",)),
                 ("p", ("q",)), ("q", ("p",)), ("top", ("x", "p")))
    cycle = g.cycle()
    assert cycle is not None and set(cycle.members) in ({"x", "y"}, {"p", "q"})
    assert cycle.path[0] == min(cycle.members)
    assert g.heads == ("top",)
    assert g.unknown_references() == ()


def test_ordered_stops_at_a_cycle() -> None:
    g = RevisionGraph({"a": Revision("a", ("c",)), "b": Revision("b", ("a",)),
                       "c": Revision("c", ("b",))}, ("c",))
    assert [r.id for r in g.ordered] == ["c", "b", "a"]


def test_long_chain_validates_without_recursion() -> None:
    n = 3000
    chain = [(f"r{i}", (f"r{i - 1}",) if i else ()) for i in range(n)]
    g = declared(*chain)
    assert g.problems() == ()
    assert g.heads == (f"r{n - 1}",)
    assert len(g.ordered) == n
    assert g.pending((), g.heads) == n
    looped = declared(("r0", (f"r{n - 1}",)), *chain[1:])
    (cycle,) = looped.problems()
    assert len(cycle.members) == n
    assert cycle.path[:3] == ("r0", f"r{n - 1}", f"r{n - 2}")


# --- classify ----------------------------------------------------------------------------


def test_classify_missing(linear: RevisionGraph) -> None:
    status = classify(TARGET, None, linear)
    assert status == TargetStatus(TARGET, (), ("c",), 3, TargetState.MISSING)


def test_classify_empty_version_table_is_behind(linear: RevisionGraph) -> None:
    status = classify(TARGET, (), linear)
    assert status.state is TargetState.BEHIND
    assert status.current == ()
    assert status.pending == 3
    assert status.head == ("c",)


@pytest.mark.parametrize(("current", "pending"), [(("a",), 2), (("b",), 1)])
def test_classify_behind(linear: RevisionGraph, current: tuple[str, ...], pending: int
                         ) -> None:
    status = classify(TARGET, current, linear)
    assert status.state is TargetState.BEHIND
    assert status.pending == pending
    assert status.current == current
    assert status.target is TARGET


def test_classify_at_head(linear: RevisionGraph) -> None:
    status = classify(TARGET, ("c",), linear)
    assert status.state is TargetState.AT_HEAD
    assert status.pending == 0


@pytest.mark.parametrize("current", [("zzz",), ("c", "zzz"), ("deadbeef01",)])
def test_classify_unknown_revision_is_ahead(linear: RevisionGraph,
                                            current: tuple[str, ...]) -> None:
    status = classify(TARGET, current, linear)
    assert status.state is TargetState.AHEAD
    assert status.pending == 0
    assert status.current == current


def test_classify_past_a_to_destination(linear: RevisionGraph) -> None:
    status = classify(TARGET, ("c",), linear, destination=("a",))
    assert status.state is TargetState.AHEAD
    assert status.pending == 0
    assert status.head == ("a",)


def test_classify_at_a_to_destination(linear: RevisionGraph) -> None:
    status = classify(TARGET, ("b",), linear, destination=("b",))
    assert status.state is TargetState.AT_HEAD
    assert status.head == ("b",)


def test_classify_behind_a_to_destination(linear: RevisionGraph) -> None:
    status = classify(TARGET, ("a",), linear, destination=("b",))
    assert status.state is TargetState.BEHIND
    assert status.pending == 1


def test_classify_missing_with_destination(linear: RevisionGraph) -> None:
    status = classify(TARGET, None, linear, destination=("b",))
    assert status.state is TargetState.MISSING
    assert status.pending == 2
    assert status.head == ("b",)


def test_classify_merged(merged: RevisionGraph) -> None:
    assert classify(TARGET, ("b1", "b2"), merged).pending == 2
    assert classify(TARGET, ("b1",), merged).state is TargetState.BEHIND
    assert classify(TARGET, ("n",), merged).state is TargetState.AT_HEAD


def test_classify_two_heads(branched: RevisionGraph) -> None:
    assert classify(TARGET, ("b1", "b2"), branched).state is TargetState.AT_HEAD
    one = classify(TARGET, ("b1",), branched)
    assert one.state is TargetState.BEHIND
    assert one.pending == 1
    assert one.head == ("b1", "b2")


def test_classify_sideways_with_pending_is_behind(merged: RevisionGraph) -> None:
    # At b1, asked for b2: b2 is pending (and b1 is not below b2).
    status = classify(TARGET, ("b1",), merged, destination=("b2",))
    assert status.state is TargetState.BEHIND
    assert status.pending == 1


def test_classify_empty_graph() -> None:
    empty = graph({}, ())
    assert classify(TARGET, None, empty).state is TargetState.MISSING
    assert classify(TARGET, None, empty).pending == 0
    assert classify(TARGET, (), empty).state is TargetState.AT_HEAD


def test_target_state_values_are_the_contract_strings() -> None:
    assert {s.value for s in TargetState} == {"at_head", "behind", "missing", "ahead", "failed",
                                           "orphan", "unreachable"}
    assert TargetState.AT_HEAD == "at_head"
    # "pending" extends the contract: targets a budget or the canary stopped from starting.
    assert {o.value for o in Outcome} == {"migrated", "skipped", "failed", "pending"}


# --- plan_step ---------------------------------------------------------------------------


def test_plan_step_upgrades_behind(linear: RevisionGraph) -> None:
    step = plan_step(classify(TARGET, ("a",), linear))
    assert isinstance(step, Step)
    assert step.upgrade is True
    assert step.reason == "2 revision(s) pending"
    assert step.target is TARGET


def test_plan_step_upgrades_missing(linear: RevisionGraph) -> None:
    step = plan_step(classify(TARGET, None, linear))
    assert step.upgrade is True
    assert "3 revision(s) pending" in step.reason


def test_plan_step_upgrades_empty_version_table(linear: RevisionGraph) -> None:
    assert plan_step(classify(TARGET, (), linear)).upgrade is True


def test_plan_step_leaves_at_head_alone(linear: RevisionGraph) -> None:
    step = plan_step(classify(TARGET, ("c",), linear))
    assert step.upgrade is False
    assert "already at the wanted revision" in step.reason


@pytest.mark.parametrize(("current", "destination"), [(("zzz",), None), (("c",), ("a",))])
def test_plan_step_never_downgrades(linear: RevisionGraph, current: tuple[str, ...],
                                    destination: tuple[str, ...] | None) -> None:
    step = plan_step(classify(TARGET, current, linear, destination))
    assert step.upgrade is False
    # Past --to: downgrade is the way; a revision the scripts do not know: deploy them.
    assert ("fleet downgrade" if destination else "do not know") in step.reason


def test_plan_step_missing_with_nothing_to_apply() -> None:
    step = plan_step(classify(TARGET, None, graph({}, ())))
    assert step.upgrade is False
    assert step.reason == "nothing to apply"


# --- state_after ------------------------------------------------------------------------


def result(outcome: Outcome, from_revs: tuple[str, ...], to_revs: tuple[str, ...]
           ) -> TargetResult:
    return TargetResult(TARGET, outcome, from_revs, to_revs)


def test_state_after_migrated_to_head(linear: RevisionGraph) -> None:
    before = classify(TARGET, ("a",), linear)
    assert state_after(result(Outcome.MIGRATED, ("a",), ("c",)), before) == (
        TargetState.AT_HEAD, 0)


def test_state_after_migrated_from_missing(linear: RevisionGraph) -> None:
    before = classify(TARGET, None, linear)
    assert state_after(result(Outcome.MIGRATED, (), ("c",)), before) == (TargetState.AT_HEAD, 0)


def test_state_after_migrated_to_two_heads_in_any_order(branched: RevisionGraph) -> None:
    before = classify(TARGET, ("a",), branched)
    assert state_after(result(Outcome.MIGRATED, ("a",), ("b2", "b1")), before) == (
        TargetState.AT_HEAD, 0)


def test_state_after_migrated_part_way(linear: RevisionGraph) -> None:
    before = classify(TARGET, ("a",), linear)
    assert state_after(result(Outcome.MIGRATED, ("a",), ("b",)), before) == (
        TargetState.BEHIND, 2)


def test_state_after_failed(linear: RevisionGraph) -> None:
    before = classify(TARGET, ("a",), linear)
    failed = TargetResult(TARGET, Outcome.FAILED, ("a",), ("a",), error="boom")
    assert state_after(failed, before) == (TargetState.FAILED, 2)


@pytest.mark.parametrize(("current", "state"), [(("c",), TargetState.AT_HEAD),
                                                (("zzz",), TargetState.AHEAD),
                                                (("a",), TargetState.BEHIND)])
def test_state_after_skipped_keeps_the_state(linear: RevisionGraph, current: tuple[str, ...],
                                             state: TargetState) -> None:
    before = classify(TARGET, current, linear)
    assert state_after(result(Outcome.SKIPPED, current, current), before) == (
        state, before.pending)


def test_a_revision_the_scripts_do_not_know_is_not_called_past_the_wanted_one(
        linear: RevisionGraph) -> None:
    # 'already past the wanted revision (use fleet downgrade)': downgrade cannot find it.
    unknown = plan_step(classify(TARGET, ("c", "zzz"), linear))
    assert not unknown.upgrade
    assert "zzz" in unknown.reason and "do not know" in unknown.reason
    assert "downgrade" not in unknown.reason
    past = plan_step(classify(TARGET, ("c",), linear, destination=("a",)))
    assert "already past the wanted revision" in past.reason

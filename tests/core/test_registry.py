"""Tests for interplay.core.registry: Registry, DomainRegistry, check_kwargs and the core-task fallback."""

from __future__ import annotations

import pytest

import interplay.core.train  # noqa: F401  (registers the core "classification" task)
from interplay.core.errors import ConfigError, InterplayError, UnknownNameError
from interplay.core.registry import CORE_TASKS, DomainRegistry, Entry, Registry, check_kwargs


def make_registry() -> Registry:
    reg = Registry("testdom", "models")

    @reg.register("kgat", "KGAT: knowledge-graph attention network", tags=("graph",))
    def kgat(dim, heads=4, *, dropout=0.1):
        return ("kgat", dim, heads, dropout)

    @reg.register("hiformer", "Hiformer: heterogeneous interaction transformer")
    def hiformer(**kwargs):
        return ("hiformer", kwargs)

    return reg


# --------------------------------------------------------------------------------------------------
# register / get / create / names / table / contains / len
# --------------------------------------------------------------------------------------------------


def test_register_returns_factory_and_get_returns_entry():
    reg = Registry("testdom", "models")

    def factory(x=1):
        return x

    assert reg.register("m", "a model")(factory) is factory
    entry = reg.get("m")
    assert isinstance(entry, Entry)
    assert (entry.name, entry.factory, entry.description, entry.tags) == ("m", factory, "a model", ())


def test_register_keeps_tags_as_tuple():
    reg = Registry("testdom", "models")
    reg.register("m", "a model", tags=["a", "b"])(lambda: None)
    assert reg.get("m").tags == ("a", "b")


def test_create_calls_factory_with_kwargs():
    reg = make_registry()
    assert reg.create("kgat", dim=8) == ("kgat", 8, 4, 0.1)
    assert reg.create("kgat", dim=8, heads=2, dropout=0.0) == ("kgat", 8, 2, 0.0)


def test_create_with_class_factory_checks_init_signature():
    reg = Registry("testdom", "models")

    @reg.register("point", "a point")
    class Point:
        def __init__(self, x, y=0):
            self.x, self.y = x, y

    p = reg.create("point", x=3, y=4)
    assert isinstance(p, Point) and (p.x, p.y) == (3, 4)
    with pytest.raises(ConfigError, match=r"'z'"):
        reg.create("point", x=1, z=2)
    with pytest.raises(ConfigError, match=r"needs parameter\(s\) 'x'"):
        reg.create("point", y=2)


def test_names_contains_len_iter():
    reg = make_registry()
    assert reg.names() == ["hiformer", "kgat"]
    assert "kgat" in reg and "hiformer" in reg
    assert "gat" not in reg and 3 not in reg
    assert len(reg) == 2
    assert [e.name for e in reg] == ["hiformer", "kgat"]
    reg.register("afm", "AFM")(lambda: None)
    assert reg.names() == ["afm", "hiformer", "kgat"]
    assert len(reg) == 3


def test_table_is_aligned_and_sorted():
    reg = make_registry()
    reg.register("a", "short name")(lambda: None)
    lines = reg.table().splitlines()
    assert len(lines) == 3
    width = max(len(n) for n in reg.names())
    expected = [(e.name, e.description) for e in sorted(reg, key=lambda e: e.name)]
    for line, (name, description) in zip(lines, expected, strict=True):
        assert line == name.ljust(width) + "  " + description
    # descriptions start in the same column
    assert len({line.index(desc) for line, (_, desc) in zip(lines, expected, strict=True)}) == 1


def test_table_of_empty_registry():
    assert Registry("testdom", "models").table() == "no models registered in testdom yet"
    assert DomainRegistry("emptydom").datasets.table() == "no datasets registered in emptydom yet"


def test_duplicate_name_raises():
    reg = make_registry()
    with pytest.raises(ValueError, match=r"testdom models 'kgat' is registered twice"):
        reg.register("kgat", "another")(lambda: None)
    assert reg.get("kgat").description == "KGAT: knowledge-graph attention network"


@pytest.mark.parametrize("description", ["two\nlines", "", "trailing newline\n"])
def test_description_must_be_one_line(description):
    reg = Registry("testdom", "models")
    with pytest.raises(ValueError, match=r"models 'm' needs a one-line description"):
        reg.register("m", description)
    assert "m" not in reg


# --------------------------------------------------------------------------------------------------
# Unknown names
# --------------------------------------------------------------------------------------------------


def test_unknown_name_suggests_close_match_and_lists_known():
    reg = make_registry()
    with pytest.raises(UnknownNameError) as info:
        reg.get("kgta")
    msg = str(info.value)
    assert "unknown testdom models 'kgta'" in msg
    assert "did you mean 'kgat'" in msg
    assert "known: hiformer, kgat" in msg
    assert not msg.startswith(("'", '"'))  # not quoted like a plain KeyError
    assert isinstance(info.value, KeyError) and isinstance(info.value, InterplayError)


def test_unknown_name_via_create_and_without_close_match():
    reg = make_registry()
    with pytest.raises(UnknownNameError) as info:
        reg.create("zzzzzz", dim=1)
    msg = str(info.value)
    assert "'zzzzzz'" in msg and "did you mean" not in msg and "known: hiformer, kgat" in msg


def test_unknown_name_in_empty_registry():
    with pytest.raises(UnknownNameError, match=r"known: none registered"):
        Registry("testdom", "datasets").get("x")


# --------------------------------------------------------------------------------------------------
# check_kwargs through create
# --------------------------------------------------------------------------------------------------


def test_unknown_kwarg_raises_config_error_with_suggestion():
    reg = Registry("testdom", "models")
    calls = []

    @reg.register("m", "a model")
    def m(dim, heads=4, *, dropout=0.1):
        calls.append(1)

    with pytest.raises(ConfigError) as info:
        reg.create("m", dim=8, haeds=2)
    msg = str(info.value)
    assert "testdom models 'm'" in msg
    assert "'haeds' (did you mean 'heads'?)" in msg
    assert "accepts: dim, heads, dropout" in msg
    assert calls == []  # the factory is never called with a bad config
    with pytest.raises(ConfigError, match=r"'qqq'") as info:
        reg.create("m", dim=8, qqq=1)
    assert "did you mean" not in str(info.value)


def test_missing_required_kwarg_raises_config_error():
    reg = Registry("testdom", "models")

    @reg.register("m", "a model")
    def m(dim, depth, heads=4, *, width, dropout=0.1):
        return dim

    with pytest.raises(ConfigError) as info:
        reg.create("m", depth=2)
    msg = str(info.value)
    assert "testdom models 'm' needs parameter(s)" in msg
    assert "'dim'" in msg and "'width'" in msg
    assert "'depth'" not in msg and "'heads'" not in msg
    assert reg.create("m", dim=3, depth=2, width=5) == 3


def test_var_kwargs_factory_accepts_anything():
    reg = make_registry()
    assert reg.create("hiformer") == ("hiformer", {})
    assert reg.create("hiformer", anything=1, at_all="x") == ("hiformer", {"anything": 1, "at_all": "x"})


def test_check_kwargs_directly():
    def f(a, b=1, *args, c, **kw):
        return a

    check_kwargs(f, {"a": 1, "c": 2, "zzz": 3}, what="f")  # **kw accepts anything

    def g(a, /, b, *, c=0):
        return a

    check_kwargs(g, {"b": 1}, what="g")  # positional-only params are not named by configs
    with pytest.raises(ConfigError, match=r"^g does not take parameter\(s\) 'a'; it accepts: b, c$"):
        check_kwargs(g, {"a": 1, "b": 2}, what="g")
    check_kwargs(max, {"x": 1}, what="max")  # builtins without a signature are left to the call


def test_error_types():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, InterplayError)
    assert issubclass(UnknownNameError, KeyError) and issubclass(UnknownNameError, InterplayError)


# --------------------------------------------------------------------------------------------------
# DomainRegistry and the core-task fallback
# --------------------------------------------------------------------------------------------------


def test_domain_registry_layout():
    d = DomainRegistry("mydomain")
    assert (d.models.domain, d.models.kind) == ("mydomain", "models")
    assert (d.datasets.domain, d.datasets.kind) == ("mydomain", "datasets")
    assert d.tasks.fallback is CORE_TASKS
    assert d.models.fallback is None and d.datasets.fallback is None
    assert d.configs_package == "interplay.mydomain.configs"
    assert DomainRegistry("x", configs_package="pkg.cfg").configs_package == "pkg.cfg"


def test_tasks_fall_back_to_core_tasks():
    from interplay.core.train import ClassificationTask

    assert "classification" in CORE_TASKS
    d = DomainRegistry("mydomain")
    assert "classification" in d.tasks
    assert d.tasks.get("classification") is CORE_TASKS.get("classification")
    assert d.tasks.get("classification").factory is ClassificationTask
    assert "classification" in d.tasks.names()
    assert len(d.tasks) == len(CORE_TASKS)
    assert "classification" in d.tasks.table()
    assert "classification" not in d.models  # only tasks fall back
    with pytest.raises(UnknownNameError, match=r"did you mean 'classification'"):
        d.tasks.get("clasification")


def test_domain_task_shadows_core_task():
    core_entry = CORE_TASKS.get("classification")
    d = DomainRegistry("mydomain")

    @d.tasks.register("classification", "domain-specific classification")
    def my_classification(model=None):
        return "mine"

    @d.tasks.register("ranking", "a domain-only task")
    def ranking():
        return "rank"

    assert d.tasks.get("classification").factory is my_classification
    assert d.tasks.create("classification") == "mine"
    assert d.tasks.names().count("classification") == 1
    assert len(d.tasks) == len(CORE_TASKS) + 1
    assert "ranking" in d.tasks and "ranking" not in CORE_TASKS
    descriptions = [e.description for e in d.tasks if e.name == "classification"]
    assert descriptions == ["domain-specific classification"]
    # core and other domains are untouched
    assert CORE_TASKS.get("classification") is core_entry
    assert DomainRegistry("other").tasks.get("classification") is core_entry

"""The report's rows go class by class, by what each environment declared (its facts in the
run's meta, then the registry), never by its name."""

from __future__ import annotations

from sandbench.report import envinfo


def test_rows_grouped_by_declared_class_keeping_order_within() -> None:
    facts = {
        "zz-microvm": {"isolation_class": "VM"},  # unknown to the registry, declared a VM
        "bubblewrap": {"isolation_class": "process sandbox"},
        "runc": {"isolation_class": "container"},
        "my-gvisor-fork": {},  # declares nothing, registry never heard of it: last
        "lxc": {"isolation_class": "system container"},
        "gvisor-systrap": {"isolation_class": "user-space kernel"},
        "host": {"isolation_class": "host"},
    }
    order = ["zz-microvm", "gvisor-systrap", "my-gvisor-fork", "lxc", "runc", "crun",
             "bubblewrap", "host", "firejail"]
    got = envinfo.by_class(order, facts)
    assert got == ["host", "bubblewrap", "firejail", "runc", "crun", "lxc", "gvisor-systrap",
                   "zz-microvm", "my-gvisor-fork"]
    # crun and firejail declared nothing in this run: the registry's class stands in.
    assert envinfo.class_of("crun", {}) == "container"
    assert envinfo.class_of("firejail", None) == "process sandbox"
    # A run's own record wins over the registry (a renamed or reclassified driver).
    assert envinfo.class_of("runc", {"isolation_class": "VM"}) == "VM"


def test_every_registered_environment_declares_a_known_class() -> None:
    unknown = {n: c for n, c in envinfo.registry_classes().items()
               if c not in envinfo.CLASS_ORDER}
    assert not unknown, f"classes the report cannot order: {unknown}"

"""`sandbench fleet run`: one study on many hosts, with Ansible as the engine.

sandbench does not schedule SSH itself: it hands each host to a playbook it ships
(playbooks/), driven through ansible-runner's Python API, and keeps what it is good at: the
study, its journal on each host, and one merged report.

    inventory.py   the hosts of an ordinary Ansible inventory (ansible-inventory --list)
    bundle.py      the exact sandbench that runs here, as a checksummed git archive
    engine.py      one playbook on one host through ansible_runner.run, with its evidence
    state.py       DIR/fleet.json: every host's state, written atomically as it changes
    orchestrate.py machines first, then hosts (one machine's hosts one after another)
"""

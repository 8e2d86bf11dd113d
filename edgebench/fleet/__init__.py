"""The fleet: one sweep on every board of an Ansible inventory, over SSH, results ingested at home.

inventory (Ansible reads the inventory; edgebench validates its edgebench_* host variables),
prepare (this edgebench's wheel, the sweep as the boards read it, the model files to ship),
playbook.yml + on_board.py (what runs on each board: the lock, the bundle tar), driver
(ansible-runner, per-device status, ingest), state (fleet.json: what each device delivered, for
--resume and `fleet status`).
"""

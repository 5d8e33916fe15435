"""The playbook grammar: value types, the channel vocabulary (addresses), YAML with positions, audience and
playbook models, cron, templates, the loader."""

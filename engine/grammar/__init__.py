"""The playbook grammar: value types, YAML with positions, audience and playbook models, cron, templates, the loader."""

"""The member store: schema, connections and dialect differences, migrations, CSV import, the demo brand."""

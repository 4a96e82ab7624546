"""The agent that runs beside a model server (light: no ML or Elasticsearch imports)."""

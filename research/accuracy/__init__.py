"""The paper-reproduction accuracy grid: ``grid`` (what runs), ``runner`` (runs it),
``starts`` (the shared fp32 starts), ``collect`` and ``bars`` (results and the paper's bars)."""

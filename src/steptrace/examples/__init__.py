"""Example workflows bundled with steptrace; ``triage`` is the one ``steptrace demo`` runs."""

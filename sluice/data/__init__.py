"""Reference data shipped with Sluice (demo products, public holidays)."""

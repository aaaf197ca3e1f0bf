"""Container runtimes behind one narrow driver interface (Docker, and a fake)."""

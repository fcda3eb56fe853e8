"""One loader per real dataset format, plus seeded synthetic generators with exact ground truth."""

"""Build scenario images: the base image, render, import check, smoke test, batch builds, report."""

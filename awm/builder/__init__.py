"""Everything that turns AWM data into images: `catalog`, `build`, `ship`, `synth`."""

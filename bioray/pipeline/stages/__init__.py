"""Stage kinds: one module each (its params, typed output and run function); bioray.pipeline.stage_kinds
lists them. This file imports nothing, so a stage's code key covers only its own module's imports."""

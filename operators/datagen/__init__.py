"""Scene building for the data renders (bpy): shared by the UI operator and the headless script."""

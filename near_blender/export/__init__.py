"""Taking a NeAR asset out of the stack (bpy-free): its relit 3D Gaussians as a standard 3D Gaussian
Splatting ``.ply`` (:mod:`.splats`, :mod:`.ply`) and its PBR attributes baked into textures.

Every exporter starts from :meth:`near_blender.scene.SceneRenderer.gaussians` -- the Gaussians that
F12 rasterizes -- so an export and a render never disagree about the asset.
"""

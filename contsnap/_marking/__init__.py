"""Marking: which functions contsnap transforms, and the records it keeps of them.

``@checkpointable`` (`_decorator`) and the import hook (`_hook`, with `_plan`, `_hooked`,
`_prebuilt` and `_show`) are siblings that never import each other: both build a
function's record through `_marking`, and the hook keeps the transformed code on disk
through `_cache`. Nothing is imported here; import the module you need.
"""

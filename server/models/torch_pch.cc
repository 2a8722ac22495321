// Anchors the precompiled torch header (server/models/torch_pch.h); see CMakeLists.txt.

# How mlx-node finds MLX, shared by CMakeLists.txt (the cmake-js build) and cmake/probe (which answers
# binding.gyp's questions), so both builds find the same mlx-c and libmlx.
# Sets MLXC_FOUND and defines mlxnode_link_mlx(target).

# Homebrew's mlx-c on Apple Silicon is found without extra flags.
if(APPLE)
  list(APPEND CMAKE_PREFIX_PATH /opt/homebrew /usr/local)
endif()

find_package(MLXC CONFIG QUIET)
if(MLXC_FOUND)
  # nlohmann/json (header-only) parses config.json; Debian: nlohmann-json3-dev, Homebrew: nlohmann-json.
  find_package(nlohmann_json 3 QUIET)
  # libmlxc carries no RUNPATH to the libmlx beside it: the addon links libmlx directly so its own
  # RUNPATH finds both. libmlx sits beside libmlxc (a from-source install) or in MLX's own CMake
  # package (the PyPI wheel `mlx[cpu]`: `python -m mlx --cmake-dir` on CMAKE_PREFIX_PATH).
  find_library(MLXNODE_MLX_LIBRARY mlx HINTS ${MLX_C_LIBRARY_DIRS} NO_DEFAULT_PATH)
  if(NOT MLXNODE_MLX_LIBRARY)
    find_package(MLX CONFIG QUIET)
    if(MLX_FOUND)
      set(MLXNODE_MLX_LIBRARY ${MLX_LIBRARY})
    endif()
  endif()
endif()

function(mlxnode_link_mlx target)
  target_compile_definitions(${target} PRIVATE MLXNODE_HAVE_MLX)
  # ${CMAKE_DL_LIBS}: dlopen/dladdr for native/blas.cpp (in libc itself from glibc 2.34).
  target_link_libraries(${target} PRIVATE mlxc ${CMAKE_DL_LIBS})
  if(nlohmann_json_FOUND)
    target_link_libraries(${target} PRIVATE nlohmann_json::nlohmann_json)
  endif()
  if(MLXNODE_MLX_LIBRARY)
    if(UNIX AND NOT APPLE)
      # Kept even where the linker defaults to --as-needed.
      target_link_options(${target} PRIVATE "LINKER:--no-as-needed")
    endif()
    target_link_libraries(${target} PRIVATE ${MLXNODE_MLX_LIBRARY})
  endif()
  # Find libmlxc/libmlx next to the addon's link-time location without LD_LIBRARY_PATH.
  set_target_properties(${target} PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE BUILD_WITH_INSTALL_RPATH FALSE)
endfunction()

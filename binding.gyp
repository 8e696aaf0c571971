# The node-gyp description of the addon, the same build as CMakeLists.txt (which `npm install` uses):
# the same sources (native/sources.json) and the same MLX search (cmake/mlx.cmake, asked through
# scripts/gyp-mlx.mjs). Used by `node-gyp rebuild` and prebuildify's default path. npm runs
# node-gyp on its own only for packages without an install script, so it never competes with ours.
{
  "variables": {
    "mlx_found": "<!(node scripts/gyp-mlx.mjs found)",
  },
  "targets": [
    {
      "target_name": "mlx_node",
      "sources": ["<!@(node -p \"require('./native/sources.json').core.join(' ')\")"],
      "include_dirs": ["native", "<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      # C++17 with exceptions and RTTI, as CMake compiles it (Node's common.gypi turns both off).
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti"],
      "xcode_settings": {
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "GCC_ENABLE_CPP_RTTI": "YES",
      },
      "msvs_settings": {
        "VCCLCompilerTool": { "ExceptionHandling": 1, "AdditionalOptions": ["/std:c++17"] },
      },
      "configurations": {
        "Release": { "defines": ["NDEBUG"] },
      },
      "conditions": [
        ["OS=='win'", { "defines": ["_HAS_EXCEPTIONS=1"] }],
        ["mlx_found==1", {
          "sources": ["<!@(node -p \"require('./native/sources.json').mlx.join(' ')\")"],
          "include_dirs": ["<!@(node scripts/gyp-mlx.mjs include_dirs)"],
          "defines": ["<!@(node scripts/gyp-mlx.mjs defines)"],
          "libraries": ["<!@(node scripts/gyp-mlx.mjs libraries)"],
          "conditions": [
            ["OS=='linux'", { "ldflags": ["-Wl,--no-as-needed", "<!@(node scripts/gyp-mlx.mjs ldflags)"], "libraries": ["-ldl"] }],
            ["OS=='mac'", { "xcode_settings": { "OTHER_LDFLAGS": ["<!@(node scripts/gyp-mlx.mjs ldflags)"] } }],
          ],
        }],
      ],
    },
  ],
}

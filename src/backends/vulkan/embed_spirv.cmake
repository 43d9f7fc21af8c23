# Writes OUT: one uint32_t array per SPIR-V file of FILES (name: the file's
# base name, kvk_spv_<name>) and a table of them, so the library carries its
# shaders without any tool beyond CMake.
set(body "/* Written by the build (embed_spirv.cmake): the compiled shaders. */\n#include <stddef.h>\n#include <stdint.h>\n\n")
set(table "")
set(count 0)
foreach(f ${FILES})
  get_filename_component(name ${f} NAME_WE)
  file(READ ${f} hex HEX)
  string(LENGTH "${hex}" len)
  math(EXPR words "${len} / 8")
  # Little-endian words: bytes b0 b1 b2 b3 -> 0xb3b2b1b0.
  string(REGEX REPLACE "(..)(..)(..)(..)" "0x\\4\\3\\2\\1u," words_text "${hex}")
  string(APPEND body "static const uint32_t kvk_spv_${name}[${words}] = {${words_text}};\n")
  string(APPEND table "    {\"${name}\", kvk_spv_${name}, ${words}},\n")
  math(EXPR count "${count} + 1")
endforeach()
string(APPEND body "\ntypedef struct { const char *name; const uint32_t *code; size_t words; } kvk_spirv;\n")
string(APPEND body "const kvk_spirv kvk_shaders[] = {\n${table}};\nconst int kvk_shader_count = ${count};\n")
file(WRITE ${OUT} "${body}")

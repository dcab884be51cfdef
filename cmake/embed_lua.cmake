# Writes OUTPUT: a C++ source defining one std::string_view per Lua file in
# INPUTS (a ;-list), named after the file, in namespace ratesync::redis::lua.
# Run at build time (cmake -P), so editing a .lua file rebuilds the library.
set(content "// Generated from lua/*.lua by cmake/embed_lua.cmake: edit those files.\n")
string(APPEND content "#include \"redis/lua_scripts.hpp\"\n\nnamespace ratesync::redis::lua {\n")
foreach(input IN LISTS INPUTS)
  get_filename_component(name "${input}" NAME_WE)
  file(READ "${input}" source)
  string(FIND "${source}" ")ratesync_lua\"" clash)
  if(NOT clash EQUAL -1)
    message(FATAL_ERROR "${input} contains the raw-string delimiter")
  endif()
  string(APPEND content "const std::string_view ${name} = R\"ratesync_lua(${source})ratesync_lua\";\n")
endforeach()
string(APPEND content "} // namespace ratesync::redis::lua\n")
file(WRITE "${OUTPUT}.tmp" "${content}")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)

# Builds and runs a consumer project of ratesync, as a user would; run with
# `cmake -P` by the package_* tests (see tests/CMakeLists.txt).
#
#   -DMODE=find_package|add_subdirectory
#   -DSOURCE_DIR=<ratesync repository>      -DBUILD_DIR=<ratesync build tree>
#   -DWORK_DIR=<scratch directory, wiped>   -DCXX_COMPILER=<compiler of the build>
#   -DGENERATOR=<generator of the build>    -DCONFIG=<build type, may be empty>
#   -DJOBS=<build parallelism; default $RATESYNC_JOBS, else 2>
#
# find_package:     installs BUILD_DIR into WORK_DIR/prefix, then builds
#                   tests/consumer/find_package against that prefix alone.
# add_subdirectory: builds tests/consumer/add_subdirectory, which adds
#                   SOURCE_DIR as a subproject.
# Either way the consumer must configure without CMake warnings, compile
# without compiler warnings, and its program must print OK.
cmake_minimum_required(VERSION 3.25)

foreach(var IN ITEMS MODE SOURCE_DIR BUILD_DIR WORK_DIR CXX_COMPILER GENERATOR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT MODE MATCHES "^(find_package|add_subdirectory)$")
  message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()
if(NOT JOBS)
  if("$ENV{RATESYNC_JOBS}" MATCHES "^[1-9][0-9]*$")
    set(JOBS "$ENV{RATESYNC_JOBS}")
  else()
    set(JOBS 2)
  endif()
endif()

set(consumer_src "${SOURCE_DIR}/tests/consumer/${MODE}")
set(consumer_build "${WORK_DIR}/build")
set(prefix "${WORK_DIR}/prefix")

# Runs a command, echoes its output (so that ctest --output-on-failure shows
# it) and fails the test on a non-zero exit. The output is left in `out`.
function(run step)
  list(JOIN ARGN " " command_line)
  message(STATUS "[${MODE}] ${step}: ${command_line}")
  execute_process(COMMAND ${ARGN}
    WORKING_DIRECTORY "${WORK_DIR}"
    RESULT_VARIABLE rc OUTPUT_VARIABLE output ERROR_VARIABLE output)
  message("${output}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "[${MODE}] ${step} failed (${rc})")
  endif()
  set(out "${output}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

set(config_args)
set(build_config_args)
if(CONFIG)
  list(APPEND config_args "-DCMAKE_BUILD_TYPE=${CONFIG}")
  list(APPEND build_config_args --config "${CONFIG}")
endif()

if(MODE STREQUAL "find_package")
  run("install" "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}"
      ${build_config_args})

  # The package files must all be there, and must not point back into the
  # source or build tree (the prefix itself lies under the build tree).
  file(GLOB_RECURSE package_files "${prefix}/*/cmake/ratesync/*.cmake")
  foreach(required IN ITEMS ratesyncConfig.cmake ratesyncConfigVersion.cmake
                            ratesyncTargets.cmake FindAsio.cmake)
    set(found FALSE)
    foreach(f IN LISTS package_files)
      get_filename_component(fname "${f}" NAME)
      if(fname STREQUAL required)
        set(found TRUE)
      endif()
    endforeach()
    if(NOT found)
      message(FATAL_ERROR "[${MODE}] installed package lacks ${required} (have: ${package_files})")
    endif()
  endforeach()
  foreach(f IN LISTS package_files)
    file(READ "${f}" content)
    string(REPLACE "${WORK_DIR}" "" content "${content}")
    foreach(tree IN ITEMS "${SOURCE_DIR}" "${BUILD_DIR}")
      string(FIND "${content}" "${tree}" at)
      if(NOT at EQUAL -1)
        message(FATAL_ERROR "[${MODE}] installed ${f} refers to ${tree}")
      endif()
    endforeach()
  endforeach()

  list(APPEND config_args
    "-DCMAKE_PREFIX_PATH=${prefix}"
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
else()
  list(APPEND config_args "-DRATESYNC_SOURCE_DIR=${SOURCE_DIR}")
endif()

run("configure" "${CMAKE_COMMAND}" -S "${consumer_src}" -B "${consumer_build}"
    -G "${GENERATOR}" "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" ${config_args})
if(out MATCHES "CMake (Warning|Deprecation Warning)")
  message(FATAL_ERROR "[${MODE}] configuring the consumer printed CMake warnings")
endif()

if(MODE STREQUAL "find_package")
  # The package found must be the one just installed.
  file(STRINGS "${consumer_build}/CMakeCache.txt" ratesync_dir REGEX "^ratesync_DIR:")
  string(REGEX REPLACE "^ratesync_DIR:[A-Z]+=" "" ratesync_dir "${ratesync_dir}")
  string(FIND "${ratesync_dir}" "${prefix}/" at)
  if(NOT at EQUAL 0)
    message(FATAL_ERROR "[${MODE}] found ratesync in '${ratesync_dir}', not in ${prefix}")
  endif()
endif()

run("build" "${CMAKE_COMMAND}" --build "${consumer_build}" --parallel "${JOBS}"
    ${build_config_args})
if(out MATCHES "[Ww]arning:")
  message(FATAL_ERROR "[${MODE}] building the consumer printed compiler warnings")
endif()

set(app "${consumer_build}/app")
if(NOT EXISTS "${app}")
  file(GLOB_RECURSE app "${consumer_build}/*/app")
endif()
if(NOT app OR NOT EXISTS "${app}")
  message(FATAL_ERROR "[${MODE}] consumer program not found under ${consumer_build}")
endif()
run("run" "${app}")
if(NOT out MATCHES "^OK")
  message(FATAL_ERROR "[${MODE}] consumer program did not print OK")
endif()
message(STATUS "[${MODE}] consumer passed")

# cmake -P script: install, then build the out-of-tree consumer twice.
file(REMOVE_RECURSE ${WORK_DIR})
set(PREFIX ${WORK_DIR}/prefix)

function(run_checked)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "packaging: command failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(LAST_OUTPUT "${out}" PARENT_SCOPE)
endfunction()

run_checked(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${PREFIX})
message(STATUS "packaging: installed into ${PREFIX}")

foreach(with_cuda OFF ON)
  set(bdir ${WORK_DIR}/consumer-cuda-${with_cuda})
  execute_process(
    COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/consumer -B ${bdir} -G ${GENERATOR}
            -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_PREFIX_PATH=${PREFIX}
            -DCONSUMER_WITH_CUDA=${with_cuda} -DCMAKE_BUILD_TYPE=Release
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(with_cuda AND NOT HAS_CUDA)
    # kvcache was built without CUDA: asking for the component must fail, clearly.
    if(rc EQUAL 0)
      message(FATAL_ERROR "packaging: COMPONENTS cuda was found in a build without CUDA")
    endif()
    if(NOT err MATCHES "built without CUDA")
      message(FATAL_ERROR "packaging: missing-component message unclear:\n${err}")
    endif()
    message(STATUS "packaging: COMPONENTS cuda fails clearly in a host-only build, as it should")
    continue()
  endif()
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "packaging: configuring the consumer (cuda=${with_cuda}) failed:\n${out}\n${err}")
  endif()
  run_checked(${CMAKE_COMMAND} --build ${bdir})
  run_checked(${bdir}/consumer)
  message(STATUS "packaging: consumer (cuda=${with_cuda}) built and ran: ${LAST_OUTPUT}")
endforeach()

# An unknown component must fail with a message that names it.
execute_process(
  COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/packaging/bad_component -B ${WORK_DIR}/bad
          -G ${GENERATOR} -DCMAKE_PREFIX_PATH=${PREFIX}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "unknown component 'tensorrt'")
  message(FATAL_ERROR "packaging: an unknown component did not fail clearly (${rc}):\n${err}")
endif()
message(STATUS "packaging: an unknown component fails clearly")

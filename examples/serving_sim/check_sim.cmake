# Acceptance checks of kvcache-sim (issue 7 and 8): on the long-context trace, 2-bit KIVI pages
# serve at least 4x the batch of f16 pages in the same budget, and evicting to 20% of each
# sequence frees real pages (a larger batch than without eviction).
function(sim_max_batch out)
  execute_process(COMMAND ${EXE} --trace long --json --no-progress ${ARGN}
                  OUTPUT_VARIABLE json ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "kvcache-sim ${ARGN} exited with ${rc}: ${err}")
  endif()
  string(JSON batch GET "${json}" paged max_batch)
  string(JSON bytes GET "${json}" quant kv_bytes_per_token_held)
  message("kvcache-sim --trace long ${ARGN}: paged max_batch ${batch}, KV bytes held per token ${bytes}")
  set(${out} ${batch} PARENT_SCOPE)
endfunction()

sim_max_batch(none --quant none)
sim_max_batch(kivi2 --quant kivi2)
sim_max_batch(evict --evict h2o --budget 0.2)
math(EXPR need "4 * ${none}")
if(kivi2 LESS need)
  message(FATAL_ERROR "--quant kivi2 max_batch ${kivi2} < 4 x ${none} (--quant none)")
endif()
if(NOT evict GREATER none)
  message(FATAL_ERROR "--evict h2o --budget 0.2 max_batch ${evict} <= ${none} without eviction")
endif()

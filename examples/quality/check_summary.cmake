# Runs `kvcache-quality --summary` on the committed fixture and checks that it prints a row for
# the full cache, for window and random at keep ratios 50%, 25% and 10%, the quantizers and the
# selection policies under their budgets.
execute_process(COMMAND ${EXE} --summary OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "kvcache-quality --summary exited with ${rc}: ${err}")
endif()
foreach(config full window:0.5 window:0.25 window:0.1 random:0.5 random:0.25 random:0.1
               quant:int8 quant:fp8 quant:kivi4 quant:kivi2 quant:kivi2_token_keys
               streaming:0.1 h2o:0.1 snapkv:0.1 scissorhands:0.1 tova:0.1 knorm:0.1
               pyramid-h2o:0.25 adakv-snapkv:0.5)
  string(REPLACE "." "\\." pattern "${config}")
  if(NOT out MATCHES "\n${pattern} +[0-9]")
    message(FATAL_ERROR "no summary row for '${config}'")
  endif()
endforeach()

# Helpers sourced by the launchers (slurm.sh keeps its own copy: sbatch runs a spooled copy of
# the script, away from this file).

# Prints the script's leading comment block (its usage text).
usage() { awk 'NR > 1 && /^#( |$)/ { sub(/^# ?/, ""); print; next } NR > 1 && !/^#/ { exit }' "$0"; }

# Shell-quotes each argument like Python's shlex.quote (the DRY_RUN output can be pasted).
sq() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\"\'\"\'}'"); fi
  done
  echo "${out[*]}"
}

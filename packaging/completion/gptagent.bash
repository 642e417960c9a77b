# bash completion for gptagent(1).
# The subcommands, their options and the module names come from the agent itself (gptagent doc
# --words), so they are always those of the installed version; host names for -l/--limit come from
# the inventory given with -i on the same line (gptagent apply -i INV --list-hosts).

# The hosts of inventory $1, one a line.
_gptagent_hosts() {
  local agent=$1 inventory=$2
  [[ $inventory == "~/"* ]] && inventory=$HOME/${inventory#"~/"}
  [[ -e $inventory ]] || return 0
  "$agent" apply -i "$inventory" --list-hosts - 2>/dev/null | sed -n 's/^    //p'
}

_gptagent() {
  local cur prev words cword
  _init_completion || return
  local agent=$1
  if ((cword == 1)); then
    COMPREPLY=($(compgen -W "$("$agent" doc --words commands 2>/dev/null) --help --version" -- "$cur"))
    return
  fi
  local cmd=${words[1]} i inventory=
  for ((i = 2; i < cword; i++)); do
    case ${words[i]} in
      -i | --inventory) inventory=${words[i + 1]} ;;
    esac
  done
  case $prev in
    -i | --inventory | --textfile)
      _filedir
      return
      ;;
    --root | --capture)
      _filedir -d
      return
      ;;
    -l | --limit)
      # A pattern is a comma-separated list: complete its last part.
      local head=
      [[ $cur == *,* ]] && head=${cur%,*},
      COMPREPLY=($(compgen -P "$head" -W "$(_gptagent_hosts "$agent" "$inventory")" -- "${cur##*,}"))
      return
      ;;
    --color)
      COMPREPLY=($(compgen -W "auto always never" -- "$cur"))
      return
      ;;
    --roff)
      COMPREPLY=($(compgen -W "commands modules" -- "$cur"))
      return
      ;;
    --words)
      COMPREPLY=($(compgen -W "commands modules $("$agent" doc --words commands 2>/dev/null)" -- "$cur"))
      return
      ;;
    -e | --extra-vars | -t | --tags | --skip-tags | --from-stage | -f | --forks | --serial | --reboot-timeout | -c | --connect)
      return  # a value of the user's
      ;;
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$("$agent" doc --words "$cmd" 2>/dev/null)" -- "$cur"))
    return
  fi
  case $cmd in
    apply | validate) _filedir '@(yaml|yml)' ;;
    doc) COMPREPLY=($(compgen -W "$("$agent" doc --words modules 2>/dev/null)" -- "$cur")) ;;
  esac
} && complete -F _gptagent gptagent

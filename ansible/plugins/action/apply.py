# gptagent.passthrough.apply: copies the agent to the host by its SHA-256 and runs a gptagent playbook there.
"""The controller side of gptagent.passthrough.apply (the module file holds its documentation).

As `gptagent apply -i` (agent/fleet.cpp) does per host, and with the same names, so that a host can
be served by both: the agent's loadable image is cached as <remote_dir>/gptagent-<sha256>; the cache
and every directory above it must belong to the remote user or root and be writable by no one else;
a new copy is decompressed under a name mktemp makes, checked with sha256sum and then renamed into
place; each run works in a private `mktemp -d` directory (0700) where the copy that runs is hashed
again right before it runs; the host's report is data, checked field by field.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.action import ActionBase
from ansible_collections.gptagent.passthrough.plugins.plugin_utils.agent_image import NotAnAgent, read_loadable_image

ARGUMENT_SPEC = dict(
    playbook=dict(type='path'),
    module=dict(type='str'),
    args=dict(type='dict', default={}),
    name=dict(type='str'),
    extra_vars=dict(type='dict', default={}),
    agent=dict(type='path'),
    root=dict(type='str'),
    remote_dir=dict(type='str'),
    remote_tmp=dict(type='str'),
    tags=dict(type='list', elements='str', default=[]),
    skip_tags=dict(type='list', elements='str', default=[]),
    connect=dict(type='str'),
    no_wait=dict(type='bool', default=False),
    reset_state=dict(type='bool', default=False),
    from_stage=dict(type='str'),
)

# The most of a report (and of the agent's stderr) read back from a host, as gptagent -i reads.
MAX_REPORT = 16 << 20
MAX_STDERR = 4096
MAX_COUNT = 1 << 24

# Exit codes of the remote shell snippets (the fleet's, where it has the same case).
EXIT_CODES = {
    89: 'gzip is not on the host',
    90: 'cannot write the agent cache',
    91: 'cannot make the private temporary directory',
    94: 'sha256sum is not on the host: the agent cannot be checked, nothing was run',
}

_CONTROL = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f]')
_CONTROL_OR_BREAK = re.compile('[\x00-\x08\x0a-\x1f\x7f-\x9f]')


class Refused(Exception):
    """The task fails with this message (a result, not an exception with a traceback for Ansible to show)."""


def printable(text, keep_breaks=False):
    """`text` with its control characters written as \\xHH: what a host sends may not drive the terminal."""
    pattern = _CONTROL if keep_breaks else _CONTROL_OR_BREAK
    return pattern.sub(lambda m: '\\x%02x' % ord(m.group()), to_text(text, errors='surrogate_then_replace'))


def excerpt(text, limit=300):
    """Up to `limit` characters of what a host said, on one line."""
    text = printable(' '.join(to_text(text, errors='surrogate_then_replace').split('\n')).replace('\r', '')).strip()
    return text if len(text) <= limit else text[:limit] + '...'


def remote_path(path):
    """A path for the remote shell: ~/x becomes "$HOME"/'x', so that the shell expands the home."""
    if path == '~':
        return '"$HOME"'
    if path.startswith('~/'):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def refuse_unsafe_dir(var='d', code=96):
    """Shell that makes the directory in $var physical and exits `code` (the reason on stderr after
    gptagent-unsafe=) unless it and every directory above it belong to the remote user or root and no
    one else may write them (OpenSSH's StrictModes); a sticky directory of root's may be above it."""
    v = '"$%s"' % var
    return (
        '%(var)s=$(cd -P -- %(v)s && pwd -P) || exit 90; u=$(id -u); p=$%(var)s; while :; do '
        's=$(stat -c \'%%u %%a\' -- "$p") || exit 90; o=${s%% *}; m=$((0${s#* })); '
        'if [ "$o" != 0 ] && [ "$o" != "$u" ]; then echo "gptagent-unsafe=$p belongs to uid $o" >&2; exit %(code)d; fi; '
        'if [ $((m & 022)) -ne 0 ] && { [ "$p" = %(v)s ] || [ "$o" != 0 ] || [ $((m & 01000)) -eq 0 ]; }; then '
        'echo "gptagent-unsafe=$p is writable by group or others" >&2; exit %(code)d; fi; '
        '[ "$p" = / ] && break; p=${p%%/*}; [ -n "$p" ] || p=/; done; ' % dict(var=var, v=v, code=code))


def said(text, name):
    """The text after gptagent-NAME= on a line of `text`, or None."""
    m = re.search('^gptagent-%s=(.*)$' % re.escape(name), text, re.M)
    return m.group(1) if m else None


def malformed(doc, exit_status, check):
    """What is wrong with a host's report, or None when it has every field read here with its type
    and agrees with the exit status of its run (agent/fleet.cpp's malformed_report)."""
    def count(v):
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT

    if not isinstance(doc, dict):
        return 'not a JSON object'
    code = doc.get('exit_code')
    if not isinstance(code, int) or isinstance(code, bool):
        return 'exit_code is not an integer'
    if code != exit_status:
        return 'its exit_code %d is not the exit status of its run, %d' % (code, exit_status)
    if 'waiting_for_reboot' in doc and not isinstance(doc['waiting_for_reboot'], bool):
        return 'waiting_for_reboot is not true or false'
    if 'errors' in doc:
        if not isinstance(doc['errors'], list) or not all(isinstance(e, str) for e in doc['errors']):
            return 'errors is not a list of strings'
        return None if code == 1 else 'errors with an exit_code other than 1'
    if doc.get('waiting_for_reboot'):
        return None if code == (2 if check else 3) else 'waiting_for_reboot with exit_code %d' % code
    stats = doc.get('stats')
    if not isinstance(stats, dict):
        return 'stats is not an object'
    for k in ('ok', 'changed', 'failed', 'skipped', 'ignored'):
        if not count(stats.get(k)):
            return 'stats.%s is not an integer from 0 to %d' % (k, MAX_COUNT)
    if (stats['failed'] > 0) != (code == 1):
        return 'stats.failed is %d with exit_code %d' % (stats['failed'], code)
    if not isinstance(doc.get('stages'), list):
        return 'stages is not a list'
    for stage in doc['stages']:
        if not isinstance(stage, dict) or not isinstance(stage.get('name'), str):
            return "a stage is not an object with a name"
        if not isinstance(stage.get('tasks'), list):
            return "a stage's tasks is not a list"
        for task in stage['tasks']:
            if not isinstance(task, dict):
                return 'a task is not an object'
            for k in ('status', 'name', 'msg', 'diff'):
                if not isinstance(task.get(k), str):
                    return "a task's %s is not a string" % k
            if 'module' in task and not isinstance(task['module'], str):
                return "a task's module is not a string"
    if 'stop_stage' in doc and not isinstance(doc['stop_stage'], str):
        return 'stop_stage is not a string'
    return None


def tasks_text(n):
    return '%d task%s' % (n, '' if n == 1 else 's')


def outcome(doc, exit_status, check, diff):
    """Ansible's result for a checked report: changed, failed, msg, diff, reboot_required, tasks."""
    result = dict(changed=False, reboot_required=False, exit_code=exit_status)
    if 'errors' in doc:
        result.update(failed=True, msg='the playbook was refused on the host, nothing was changed: ' +
                      '; '.join(printable(e) for e in doc['errors']))
        return result
    if doc.get('waiting_for_reboot'):
        result.update(reboot_required=True, msg='waiting for a reboot: reboot the host, then run this task again for the checks after it')
        return result
    tasks, diffs, failed = [], [], None
    for stage in doc['stages']:
        for t in stage['tasks']:
            task = dict(stage=printable(stage['name']), name=printable(t['name']), status=printable(t['status']),
                        msg=printable(t['msg']))
            if isinstance(t.get('module'), str):
                task['module'] = printable(t['module'])
            tasks.append(task)
            if t['status'] == 'failed' and failed is None:
                failed = task
            if diff and t['diff']:
                diffs.append(dict(prepared=printable(t['diff'], keep_breaks=True)))
    stats = doc['stats']
    result.update(tasks=tasks, stats=dict((k, stats[k]) for k in ('ok', 'changed', 'failed', 'skipped', 'ignored')))
    if diffs:
        result['diff'] = diffs
    if exit_status == 1:
        where = "task '%s' of stage '%s'" % (failed['name'], failed['stage']) if failed else 'a task'
        result.update(failed=True, msg='%s failed: %s' % (where, failed['msg'] if failed else 'see tasks'))
    elif exit_status == 3 and not check:
        result.update(changed=stats['changed'] > 0, reboot_required=True,
                      msg="stopped for a reboot after stage '%s': reboot the host, then run this task again for the "
                          "checks after it" % printable(doc.get('stop_stage') or ''))
    elif exit_status == 2 and check:
        result.update(changed=True, msg='%s would change, %d ok' % (tasks_text(stats['changed']), stats['ok']))
    elif exit_status == 0:
        result.update(changed=stats['changed'] > 0, msg='%s changed, %d ok' % (tasks_text(stats['changed']), stats['ok'])
                      if stats['changed'] else '%s ok' % tasks_text(stats['ok']))
    else:
        result.update(failed=True, msg='the agent exited %d%s' % (exit_status, ' in check mode' if check else ''))
    return result


class ActionModule(ActionBase):
    TRANSFERS_FILES = False  # into its own private directory: Ansible need not make its remote tmp
    _requires_connection = True
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        try:
            result.update(self._apply(task_vars or {}))
        except Refused as e:
            result.update(failed=True, msg=str(e))
        return result

    def _apply(self, task_vars):
        result = {}
        _, args = self.validate_argument_spec(
            argument_spec=ARGUMENT_SPEC,
            mutually_exclusive=[('playbook', 'module')],
            required_one_of=[('playbook', 'module')],
        )
        if self._connection.become and self.get_become_option('become_user') not in (None, '', 'root'):
            raise Refused('become_user %s is refused: the agent must run as root (it writes the boot configuration '
                          'and binds devices)' % printable(self.get_become_option('become_user')))

        def host_var(name, default):
            value = task_vars.get(name, default)
            return self._templar.template(value) if isinstance(value, str) else value

        agent = args['agent'] or host_var('gptagent_agent', None) or shutil.which('gptagent')
        if not agent:
            raise Refused('no agent: give agent (the controller path of the portable gptagent) or put gptagent on PATH')
        try:
            image = read_loadable_image(agent)
        except (OSError, NotAnAgent) as e:
            raise Refused('the agent %s cannot be shipped: %s' % (agent, e))
        sha = hashlib.sha256(image).hexdigest()

        check, diff = bool(self._task.check_mode), bool(self._task.diff)
        root = args['root'] or host_var('gptagent_root', '/')
        remote_dir = args['remote_dir'] or host_var('gptagent_remote_dir', '~/.cache/gptagent')
        remote_tmp = args['remote_tmp'] or host_var('gptagent_remote_tmp', '')
        playbook = self._playbook_bytes(args)
        variables = dict(args['extra_vars'])
        variables.setdefault('inventory_hostname', task_vars.get('inventory_hostname', ''))

        agent_args = ['--json', '--color', 'never', '--root', root]
        agent_args += ['--check'] if check else []
        agent_args += ['--diff'] if diff else []
        for t in args['tags']:
            agent_args += ['--tags', t]
        for t in args['skip_tags']:
            agent_args += ['--skip-tags', t]
        agent_args += ['--no-wait'] if args['no_wait'] else []
        agent_args += ['--connect', args['connect']] if args['connect'] else []
        agent_args += ['--reset-state'] if args['reset_state'] else []
        agent_args += ['--from-stage', args['from_stage']] if args['from_stage'] else []

        run = _HostRun(self, sha, remote_dir, remote_tmp)
        try:
            run.prepare()
            if not run.cached:
                run.copy_agent(image)
            self._transfer_data(run.tmp + '/playbook.yaml', playbook)
            self._transfer_data(run.tmp + '/vars.json', json.dumps(variables))
            status, doc, stderr = run.apply(agent_args)
        finally:
            run.cleanup()
        result.update(agent_sha256=sha, agent_copied=not run.cached)
        if doc is None:
            result.update(failed=True, exit_code=status,
                          msg='MODULE FAILURE: the agent did not answer with JSON (exit %d): %s' % (status, stderr))
            return result
        bad = malformed(doc, status, check)
        if bad:
            result.update(failed=True, exit_code=status, msg="MODULE FAILURE: the agent's report is malformed (%s)" % bad)
            return result
        if 'errors' in doc:  # file:line:col of the copy on the host: the user's file is the controller's
            shown = args['playbook'] or '(module %s)' % args['module']
            doc['errors'] = [e.replace(run.tmp + '/playbook.yaml', shown) for e in doc['errors']]
        result.update(outcome(doc, status, check, diff))
        return result

    def _playbook_bytes(self, args):
        if args['module']:
            # One stage that may stop for a reboot: the agent then records what to check after it.
            task = {'name': args['name'] or args['module'], args['module']: args['args']}
            return json.dumps({'stages': [{'name': args['module'], 'reboot': 'when_needed', 'tasks': [task]}]},
                              sort_keys=True) + '\n'
        try:
            with open(self._find_needle('files', args['playbook']), 'rb') as f:
                return f.read()
        except (AnsibleError, OSError) as e:
            raise Refused('cannot read the playbook %s: %s' % (args['playbook'], e))


class _HostRun:
    """One run on one host: its private temporary directory, the agent there, the run, the cleanup."""

    def __init__(self, action, sha, remote_dir, remote_tmp):
        self.action, self.sha, self.name = action, sha, 'gptagent-' + sha
        self.remote_dir, self.remote_tmp = remote_dir, remote_tmp
        self.tmp, self.cached, self.gzip, self.tmp_removed = None, False, False, False

    def _shell(self, script, sudoable=False):
        # Bytes that are no UTF-8 become U+FFFD, as in gptagent -i's reports.
        res = self.action._low_level_execute_command(script, sudoable=sudoable, encoding_errors='replace')
        return res['rc'], res.get('stdout', ''), res.get('stderr', '')

    def _verify(self, path):
        return "printf '%%s  %%s\\n' %s %s | sha256sum -c --status" % (self.sha, path)

    def _fail(self, rc, err, when):
        if rc == 96 or rc == 97:
            what, where = ('the agent cache', self.remote_dir) if rc == 96 else ('remote_tmp', self.remote_tmp)
            why = said(err, 'unsafe') or where + ' is not safe'
            raise Refused(
                'refused %s %s: %s (it and every directory above it must belong to the remote user or root and be '
                'writable by no one else, as OpenSSH\'s StrictModes asks): nothing was copied or run'
                % (what, printable(where), printable(why)))
        if rc == 95:
            raise Refused('the agent copied to %s does not have its SHA-256 %s on the host: nothing was run'
                                    % (printable(self.remote_dir), self.sha))
        raise Refused('%s: %s (exit %d): %s' % (when, EXIT_CODES.get(rc, 'the remote shell failed'), rc, excerpt(err)))

    def prepare(self):
        """The cache checked, a private directory made, and the cached agent copied there if it is the right one."""
        d = remote_path(self.remote_dir)
        if self.remote_tmp:
            parent = 'r=%s; [ -d "$r" ] || exit 91; %s' % (remote_path(self.remote_tmp), refuse_unsafe_dir('r', 97))
        else:
            parent = 'r="$d/tmp"; { [ -d "$r" ] && [ ! -L "$r" ]; } || mkdir -- "$r" || exit 91; '
        script = (
            'umask 077; d=%(d)s; mkdir -p -- "$d" || exit 90; %(refuse)scommand -v sha256sum >/dev/null || exit 94; '
            '%(parent)st=$(mktemp -d "$r/gptagent.ansible.XXXXXXXX") || exit 91; echo "gptagent-tmp=$t"; '
            'command -v gzip >/dev/null && echo gptagent-gzip=yes; a="$d/%(name)s"; '
            'if [ -f "$a" ] && %(verify)s; then { cat "$a" > "$t/%(name)s" && chmod 700 "$t/%(name)s"; } || exit 91; '
            'echo gptagent-cached=yes; fi; exit 0'
            % dict(d=d, refuse=refuse_unsafe_dir(), parent=parent, name=self.name, verify=self._verify('"$a"')))
        rc, out, err = self._shell(script)
        tmp = said(out, 'tmp')
        if rc == 0 and (not tmp or not re.match(r'^/[^\n]*/gptagent\.ansible\.[A-Za-z0-9]+$', tmp)):
            raise Refused('the host did not say which private directory it made: %s' % excerpt(out))
        if rc != 0:
            self._fail(rc, err, 'cannot prepare %s and a private temporary directory' % printable(self.remote_dir))
        self.tmp, self.cached, self.gzip = tmp, said(out, 'cached') == 'yes', said(out, 'gzip') == 'yes'

    def copy_agent(self, image):
        """The agent sent (gzip-compressed when the host has gzip) and put into the cache under its hash."""
        payload = gzip.compress(image, compresslevel=6, mtime=0) if self.gzip else image
        fd, local = tempfile.mkstemp(dir=C.DEFAULT_LOCAL_TMP, prefix='gptagent-')
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(payload)
            self.action._transfer_file(local, self.tmp + '/agent.in')
        finally:
            os.unlink(local)
        # Written whole under a name mktemp makes, checked, then renamed: the cached name always holds
        # that content. Other versions are removed once this one is in place, as gptagent -i does.
        script = (
            'umask 077; d=%(d)s; %(refuse)st=%(t)s; a=$(mktemp "$d/.gptagent.new.XXXXXXXX") || exit 90; '
            '%(unpack)s < "$t/agent.in" > "$a" || { rm -f "$a"; exit 90; }; rm -f "$t/agent.in"; '
            '%(verify)s || { rm -f "$a"; exit 95; }; chmod 700 "$a" && mv -f "$a" "$d/%(name)s" || exit 90; '
            'for f in "$d"/gptagent-*; do [ "$f" = "$d/%(name)s" ] || rm -f "$f"; done; '
            '{ cat "$d/%(name)s" > "$t/%(name)s" && chmod 700 "$t/%(name)s"; } || exit 91'
            % dict(d=remote_path(self.remote_dir), refuse=refuse_unsafe_dir(), t=shlex.quote(self.tmp),
                   unpack='gzip -dc' if self.gzip else 'cat', verify=self._verify('"$a"'), name=self.name))
        rc, _, err = self._shell(script)
        if rc != 0:
            self._fail(rc, err, 'cannot copy the agent to %s' % printable(self.remote_dir))

    def apply(self, agent_args):
        """(exit status, report or None, stderr excerpt) of `gptagent apply` run with become."""
        t = shlex.quote(self.tmp)
        command = ' '.join(shlex.quote(a) for a in agent_args)
        # What runs is the copy in the private directory, hashed again right before it runs. The report
        # goes to a file so that no more than MAX_REPORT bytes of it come back, then the end of the
        # agent's stderr after a line of its own: ansible's ssh gives a command that may become a
        # terminal (-tt), become or not, and stderr then comes down the same stream.
        script = (
            't=%(t)s; a="$t/%(name)s"; %(verify)s || exit 95; cd / && "$a" apply "$t/playbook.yaml" %(command)s '
            '-e @"$t/vars.json" </dev/null >"$t/report.json" 2>"$t/stderr"; rc=$?; head -c %(max)d "$t/report.json"; '
            'printf \'\\ngptagent-stderr=\'; tail -c %(max_err)d "$t/stderr"; rm -rf -- "$t"; exit $rc'
            % dict(t=t, name=self.name, verify=self._verify('"$a"'), command=command, max=MAX_REPORT + 1,
                   max_err=MAX_STDERR))
        rc, out, err = self._shell(script, sudoable=True)
        self.tmp_removed = True
        if rc == 95 and 'gptagent-stderr=' not in out:
            self._fail(rc, err, 'cannot run the agent')
        marker = re.search(r'\r?\ngptagent-stderr=', out)
        report, stderr = (out[:marker.start()], out[marker.end():]) if marker else (out, err)
        if len(to_bytes(report, errors='surrogate_or_replace')) > MAX_REPORT:
            return rc, None, 'the host sent more than 16 MiB: refused'
        try:
            doc = json.loads(report)
        except ValueError:
            return rc, None, excerpt(stderr or report)
        return rc, doc, excerpt(stderr)

    def cleanup(self):
        """The private directory removed when the run did not remove it (a failure before or during it)."""
        if self.tmp and not self.tmp_removed:
            try:
                self._shell('rm -rf -- %s' % shlex.quote(self.tmp))
            except AnsibleError:  # the host went away: what failed first is the error to report
                pass

-- Shared by the scripts that write more than once; prepended to them (first) when they are loaded.
--
-- Redis does not roll a script back: a call that fails after the first write leaves that write in place. So every
-- script first does whatever can be refused or fail, and writes only then:
--   * the keys: EVAL itself needs read and write access to every key it is given, before the script starts, so a
--     call on one of them is refused for its command alone (see allow for users with several ACL selectors);
--   * reads, including TIME, come before the first write; a read of each key the script will write raises
--     WRONGTYPE for a key of another type;
--   * the other commands the script may run after its first write are asked for here (allow), once each;
--   * OOM is refused at a script's first write only (Redis lets a script that wrote finish), and READONLY and
--     MISCONF hold for the whole run, so once the first write passed, none of them comes later;
--   * a PUBLISH that is refused changes nothing: announce runs it with pcall and reports it.

-- allow raises NOPERM unless the user running the script may run this command with these arguments (its name,
-- subcommand, keys and channels). A script asks once per command, on one of its keys: a command the user may run
-- on one of the script's keys it may run on all of them, unless its ACL has selectors that grant a command on some
-- keys only, which keyward does not support. redis.acl_check_cmd is Redis 7's; servers without it (older ones,
-- miniredis) skip the check.
local acl_check_cmd = redis.acl_check_cmd
local function allow(...)
  if acl_check_cmd and not acl_check_cmd(...) then
    error({err = "NOPERM this user has no permissions to run the '" .. string.lower((...)) ..
      "' command the script needs; it stopped before writing anything"})
  end
end

-- announce publishes msg on channel with cmd (PUBLISH or SPUBLISH) and reports whether it could: a user that may
-- not publish there is refused, which changes nothing.
local function announce(cmd, channel, msg)
  return type(redis.pcall(cmd, channel, msg)) ~= 'table'
end

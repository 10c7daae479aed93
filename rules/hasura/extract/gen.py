import json, re, yaml
import os
OUT=os.environ['TW_RULES_HASURA'].rstrip('/')+'/'  # rules/hasura/
def key(v):
    m=re.match(r'v(\d+)\.(\d+)\.(\d+)(?:-(alpha|beta|rc)\.?(\d+))?',v)
    a,b,c,pre,n=m.groups(); return (int(a),int(b),int(c),{'alpha':0,'beta':1,'rc':2,None:3}[pre],int(n or 0))
def q(s): return json.dumps(s, ensure_ascii=False)
def write(name, header, items):
    with open(OUT+name,'w') as f:
        f.write(header.rstrip()+'\n')
        f.write('values:\n')
        for it in items: f.write('  - '+it+'\n')
# --- CLI
res=json.load(open('cli.json')); vers=list(res)
first={};last={}
for v in vers:
    ps=set(res[v]['paths'])|{'hasura help'}
    if not res[v]['cobra'].startswith(('dep','0.')): ps|={'hasura __complete','hasura __completeNoDesc'}
    for p in ps: first.setdefault(p,v); last[p]=v
counts={v:len(set(res[v]['paths']))+1+(0 if res[v]['cobra'].startswith(('dep','0.')) else 2) for v in vers}
gen=[]
prev=None
for v in vers:
    ps=frozenset(res[v]['paths'])|({'x'} if not res[v]['cobra'].startswith(('dep','0.')) else frozenset())
    if ps!=prev: gen.append((v,counts[v])); prev=ps
items=[q('')+'   # alpha36: cobra failed before PersistentPreRun (unknown command or flag), Command stays ""']
for p in sorted(first, key=lambda p:(p!='hasura',p)):
    note=f"since: {first[p]}"+ (f", until: {last[p]}" if last[p]!=vers[-1] else '')
    items.append('{value: '+q(p)+', '+note+'}')
hdr=f'''# Hasura CLI command paths: the values of cobra's cmd.CommandPath() that cli/telemetry sends in
# `command` (the CLI joins " --<flag>" for each flag set from v2.1.0-beta.1: flags are not here, see
# the pack's cli-accepted-flags; a positional argument is never part of a command path).
#
# Read from the cobra command tree in hasura/graphql-engine cli/commands/*.go (every `&cobra.Command{{Use: ...}}`
# and every `X.AddCommand(...)`, walked from rootCmd "hasura") at all {len(vers)} releases from
# v1.0.0-alpha36 to v2.48.10: v1.x at the upstream tags (fork nizar-m/graphql-engine), v1.3.1+ at the
# "tag release vX" commits of upstream master (nhost/graphql-engine mirror; commit per release in
# rules/hasura/releases.tsv; regenerate with rules/hasura/extract/run.sh). Additions made by cobra itself: "hasura help" (default help command, all
# versions) and the hidden "hasura __complete"/"hasura __completeNoDesc" (shell completion, cobra >= 1.0,
# i.e. v2.0.0-alpha.7+). Plugins ("hasura <plugin>") exec and exit before telemetry, so they send nothing.
#
# The check uses the union; since/until are the first/last release that has the path.
# Paths per generation (count includes the cobra additions):
'''
for v,c in gen: hdr+=f'#   {v}: {c}\n'
hdr+='source: "hasura/graphql-engine cli/commands/*.go (cobra tree), v1.0.0-alpha36 .. v2.48.10"\n'
write('cli-commands.yaml',hdr,items)
print('cli',len(first),gen)
# --- experimental features
ef=json.load(open('ef.json'))
items=['{value: '+q(k)+', since: '+ef[k]+'}' for k in sorted(ef,key=lambda k:(key(ef[k]),k))]
write('experimental-features.yaml','''# Hasura server `experimental_features` keys (sent from v2.17.0 as a HashSet of ExperimentalFeature).
#
# Read from hasura/graphql-engine server/src-lib (the file declaring `data ExperimentalFeature`; its
# `EF... -> "key"` cases in experimentalFeatureKey / ToJSON; HEAD: server/src-lib/Hasura/Server/Types.hs)
# at every release commit from v2.9.0-beta.1 to v2.48.10 (upstream master "tag release" commits).
# `since` is the first release commit that has the key (backport releases such as v2.11.x make it
# look earlier than the mainline release). input_validation existed only around v2.28.1-v2.29.0-beta.1.
source: "hasura/graphql-engine server/src-lib/Hasura/Server/Types.hs experimentalFeatureKey, v2.9.0-beta.1 .. v2.48.10"''',items)
print('ef',len(ef))
# --- feature flags
ff=json.load(open('ff.json'))
items=['{value: '+q(k)+', since: '+ff[k]+'}' for k in sorted(ff,key=lambda k:(key(ff[k]),k))]
write('console-feature-flags.yaml','''# Hasura console SET_FEATURE_FLAG `feature_flag` values: the `title` of the flag in
# availableFeatureFlags, or "Unknown" when the id is not found (useSetFeatureFlagEnabled.ts).
#
# Read from hasura/graphql-engine frontend/libs/console/legacy-ce/src/lib/features/FeatureFlags/availableFeatureFlags.ts
# (every `title:` literal) at every release commit from v2.20.0-beta.1 (first release that sends the
# event) to v2.48.10.
source: "hasura/graphql-engine frontend/libs/console/legacy-ce/src/lib/features/FeatureFlags/availableFeatureFlags.ts, v2.20.0-beta.1 .. v2.48.10"''',items)
print('ff',len(ff))
# --- analytics ids
an=json.load(open('an2.json'))
items=['{value: "unknown", note: "not Hasura\'s: the placeholder telewarden\'s scrub writes (hasura.console.analytics-id)"}']
items+=['{value: '+q(k)+', since: '+v+'}' for k,(v,f) in sorted(an['first'].items(),key=lambda kv:(key(kv[1][0]),kv[0]))]
items+=['{pattern: '+q(p)+', since: '+v+', from: '+q(f.split('/src/')[-1])+'}' for p,(v,f) in sorted(an['pats'].items(),key=lambda kv:(key(kv[1][0]),kv[0]))]
write('console-analytics-ids.yaml','''# Hasura console CLICK_EVENT / INPUT_CHANGE_EVENT `id` values: the data-analytics-name attribute
# of the clicked/changed element or its closest ancestor (features/Analytics/core/telemetry/htmlEvents.ts).
#
# Read from hasura/graphql-engine frontend/ at every release commit from v2.23.0-beta.1 (first with the
# listeners) to v2.48.10: string literals given to <Analytics name=...>, getAnalyticsAttributes(...),
# useGetAnalyticsAttributes(...), data-analytics-name= / data-trackid= attributes, and the trackId /
# analyticsName / onSubmitAnalyticsName / onCancelAnalyticsName / tracking props (tests, stories and
# mocks left out). Conditional names contribute every literal branch.
# Ten names are template strings built from product constants (`ee-benefits-${id}-link`, ...): they are
# patterns whose `${...}` part is one token [A-Za-z0-9_-]{1,64} (no spaces, no dots, no slashes).
source: "hasura/graphql-engine frontend/libs/console/legacy-ce/src (data-analytics-name values), v2.23.0-beta.1 .. v2.48.10"''',items)
print('an',len(an['first']),len(an['pats']))
# --- redux
rd=json.load(open('redux2.json'))['first']
items=['{value: '+q(k)+', since: '+rd[k]+'}' for k in sorted(rd,key=lambda k:(key(rd[k]),k))]
write('console-redux-actions.yaml','''# Hasura console v1 `event_type` values (topic console): the Redux action type of every action that
# went through the store's analytics middleware (alpha36 client.js analyticsLogger, then
# telemetry/index.ts trackReduxAction, removed at v2.5.0/v2.6.0-beta.1; v2.6-v2.16 send only
# Main/RUN_TIME_ERROR).
#
# Read from hasura/graphql-engine console/src (tests and stories left out) at every release from
# v1.0.0-alpha36 to v2.6.0-beta.1 (v1.x tags, then upstream master "tag release" commits): every string
# literal of the form Module/ACTION (one or more /-separated segments, last segment upper case), every
# upper-case literal in `type: '...'` or `const X = '...'`, and the /pending, /fulfilled, /rejected types
# of each createAsyncThunk. This is a superset of the types dispatched (some literals are other
# constants): every one is a static string in Hasura's code, none is user data.
# Known gap: an action type built at run time would be a finding (none seen; the wire-format page
# section 8 says only a spot check was done upstream).
source: "hasura/graphql-engine console/src Redux action types, v1.0.0-alpha36 .. v2.6.0-beta.1"''',items)
print('redux',len(rd))
# releases
with open(OUT+'releases.tsv','w') as f:
    f.write('# release\trepository\tcommit (tag for v1.x; "tag release" commit on upstream master after v1.3.0)\n')
    for line in open('rels.tsv'):
        v,gd,rev=line.split()
        repo='nizar-m/graphql-engine' if gd==os.environ['HASURA_V1_GIT'] else 'hasura/graphql-engine (master, via nhost/graphql-engine)'
        if 'nhost' in gd: rev=__import__('subprocess').run(['git','--git-dir',gd,'rev-parse',rev],capture_output=True,text=True).stdout.strip()
        f.write(f'{v}\t{repo}\t{rev}\n')

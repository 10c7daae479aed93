import re,subprocess,json,sys
def git(gd,*a): return subprocess.run(['git','--git-dir',gd,*a],capture_output=True,text=True).stdout
def key(v):
    m=re.match(r'v(\d+)\.(\d+)\.(\d+)(?:-(alpha|beta|rc)\.?(\d+))?',v)
    a,b,c,pre,n=m.groups(); return (int(a),int(b),int(c),{'alpha':0,'beta':1,'rc':2,None:3}[pre],int(n or 0))
Q="['\"`]"
SLASH=re.compile(r"""['"`]([A-Za-z@][\w@-]*(?:/[\w-]+)+)['"`]""")
CAPS_TAIL=re.compile(r'_?[A-Z][A-Z0-9_]*')
TYPE=re.compile(r"""\btype:\s*['"`]([A-Z][A-Z0-9_]*)['"`]""")
CONST=re.compile(r"""\bconst\s+[A-Z][A-Z0-9_]*\s*=\s*['"`]([A-Z][A-Z0-9_]*)['"`]""")
THUNK=re.compile(r"""createAsyncThunk(?:<[^>]*>)?\(\s*['"`]([\w/-]+)['"`]""",re.S)
res={}; first={}
for line in open('rels.tsv'):
    v,gd,rev=line.split()
    if key(v)>key('v2.6.0-beta.1'): break
    files=[f for f in git(gd,'ls-tree','-r','--name-only',rev,'console/src').split() if re.search(r'\.(js|jsx|ts|tsx)$',f) and '__tests__' not in f and '.test.' not in f and '.stories.' not in f]
    vals=set()
    for out in [git(gd,'grep','-hE',r"['\"\`][A-Za-z@][A-Za-z0-9@_-]*/|type:|const [A-Z]",rev,'--',*[f for f in files])]:
        for l in out.splitlines():
            for m in SLASH.finditer(l):
                if CAPS_TAIL.fullmatch(m.group(1).rsplit('/',1)[1]): vals.add(m.group(1))
            for m in TYPE.finditer(l): vals.add(m.group(1))
            for m in CONST.finditer(l): vals.add(m.group(1))
    th=git(gd,'grep','-h','-A12','createAsyncThunk',rev,'--','console/src')
    for m in re.finditer(r"""^\s*['"`]([A-Za-z]+/\w+)['"`]""",th,re.M):
        for s in ('pending','fulfilled','rejected'): vals.add(m.group(1)+'/'+s)
    res[v]=sorted(vals)
    for x in vals: first.setdefault(x,v)
    print(v,len(vals),file=sys.stderr)
json.dump({'per':res,'first':first},open('redux2.json','w'))
u=set(first); print(len(u))

import re,subprocess,json,sys
def git(gd,*a): return subprocess.run(['git','--git-dir',gd,*a],capture_output=True,text=True).stdout
def key(v):
    m=re.match(r'v(\d+)\.(\d+)\.(\d+)(?:-(alpha|beta|rc)\.?(\d+))?',v)
    a,b,c,pre,n=m.groups(); return (int(a),int(b),int(c),{'alpha':0,'beta':1,'rc':2,None:3}[pre],int(n or 0))
first={}; prev=None; sends={}
for line in open('rels.tsv'):
    v,gd,rev=line.split()
    if key(v)<key('v2.17.0'): continue
    fs=[f for f in git(gd,'ls-tree','-r','--name-only',rev,'frontend/libs/console/legacy-ce/src/lib/features/FeatureFlags/').split() if f.endswith('availableFeatureFlags.ts')]
    sent=bool(git(gd,'grep','-l','SET_FEATURE_FLAG',rev,'--','frontend/libs/console/legacy-ce/src/lib/features/FeatureFlags'))
    titles=set()
    for f in fs:
        t=git(gd,'show',f'{rev}:{f}')
        titles|={a or b for a,b in re.findall(r"""\btitle:\s*(?:'([^']*)'|"([^"]*)")""",t)}
    if sent:
        for x in titles|{'Unknown'}: first.setdefault(x,v)
    if (sorted(titles),sent)!=prev: print(v,sent,sorted(titles))
    prev=(sorted(titles),sent)
json.dump(first,open('ff.json','w'),indent=0)

import re,subprocess,json
def git(gd,*a): return subprocess.run(['git','--git-dir',gd,*a],capture_output=True,text=True).stdout
def key(v):
    m=re.match(r'v(\d+)\.(\d+)\.(\d+)(?:-(alpha|beta|rc)\.?(\d+))?',v)
    a,b,c,pre,n=m.groups(); return (int(a),int(b),int(c),{'alpha':0,'beta':1,'rc':2,None:3}[pre],int(n or 0))
res={}
for line in open('rels.tsv'):
    v,gd,rev=line.split()
    if key(v)<key('v2.9.0-beta.1'): continue
    files=git(gd,'grep','-l','data ExperimentalFeature',rev,'--','server/src-lib').split()
    keys=set()
    for f in files:
        t=git(gd,'show',f)
        keys|=set(re.findall(r'\bEF\w+\s*->\s*"(\w+)"',t))
    res[v]=sorted(keys)
prev=None;first={}
for v,k in res.items():
    for x in k: first.setdefault(x,v)
    if k!=prev: print(v,k)
    prev=k
json.dump(first,open('ef.json','w'))
